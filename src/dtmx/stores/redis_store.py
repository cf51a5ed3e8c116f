"""The Redis store: every verb is one Lua script (or one plain command), so one round trip.

Key layout is described in redis_lua/prelude.lua. All keys start with `prefix`, a hash tag
("{a}") by default, so in a Redis Cluster everything lands in one slot and the scripts may
touch keys they derive from gids. Globals are hashes (the scripts read status, owner and
next_cron_time without decoding anything); branch data stays bytes end to end.

Lifetimes follow DTM's idea: unfinished transactions get `data_ttl` refreshed on each write;
a finished one leaves the cron index and expires `finished_ttl` after it finished. The
`all` index (for `scan`) is cleaned lazily by scans and by a small sweep on each create.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dtmx.core.models import KV, Branch, Change, ScanFilter, Status, Transaction, TransType
from dtmx.errors import ConfigError, DuplicateBranch, StoreError, StoreUnavailable
from dtmx.net.resp import RedisAddress, ReplyError, RespClient
from dtmx.stores.redis_codec import (
    branch_key,
    change_fields,
    check_unique,
    decode_branches,
    decode_kv,
    decode_trans,
    encode_branch,
    encode_kv,
    encode_trans,
    flat,
    num,
    opt_num,
    pairs,
)

_LUA_DIR = Path(__file__).with_name("redis_lua")
_SCRIPTS_WITH_PRELUDE = ("create", "update", "take", "add_branches")
_SCRIPTS = (
    *_SCRIPTS_WITH_PRELUDE,
    "claim_due",
    "reset_next_cron_time",
    "reset_cron_time",
    "scan",
    "expire_finished",
    "kv_create",
    "kv_update",
    "kv_delete",
    "kv_scan",
)
_FINISHED = (Status.SUCCEED.value, Status.FAILED.value)
# how many `all` index entries one scan call may examine before returning a partial page
_SCAN_BUDGET = 10_000


def _load_lua(name: str) -> str:
    body = (_LUA_DIR / f"{name}.lua").read_text()
    if name in _SCRIPTS_WITH_PRELUDE:
        return (_LUA_DIR / "prelude.lua").read_text() + "\n" + body
    return body


# ---- the store ------------------------------------------------------------------------
class RedisStore:
    """`Store` on Redis through our pipelined RESP client (`dtmx.net.resp`).

    See the module docstring for the layout. One pipelined connection by default carries
    all the concurrency: Redis runs one command at a time anyway, and one stream makes the
    largest batches (measured: 2 connections cost ~5% more CPU in the store floor, 4 more
    still). `pool_size` is accepted for the settings' MaxOpenConns and caps `connections`.
    Connecting and logging in give up after `connect_timeout`; a connection whose commands
    get no reply for `reply_timeout` is dropped (its callers get StoreUnavailable).
    """

    def __init__(
        self,
        url: str,
        prefix: str = "{a}",
        finished_ttl: float = 86400.0,
        data_ttl: float = 604800.0,
        pool_size: int = 64,
        connections: int = 1,
        connect_timeout: float = 5.0,
        reply_timeout: float | None = 15.0,
        ca_file: str = "",
    ) -> None:
        self.roundtrips = 0
        self._p = prefix
        self._fttl_ms = str(int(finished_ttl * 1000))
        self._dttl_ms = str(int(data_ttl * 1000))
        try:
            address = RedisAddress.from_url(url, ca_file=ca_file)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self._client = RespClient(
            address,
            connections=max(1, min(connections, pool_size)),
            connect_timeout=connect_timeout,
            reply_timeout=reply_timeout,
        )
        self._bodies = {name: _load_lua(name) for name in _SCRIPTS}
        self._shas = {name: hashlib.sha1(body.encode()).hexdigest()
                      for name, body in self._bodies.items()}

    # ---- plumbing ---------------------------------------------------------------------
    async def _call(self, *args: Any) -> Any:
        """One counted round trip, with errors translated to ours (never re-sent)."""
        self.roundtrips += 1
        try:
            return await self._client.execute(*args)
        except ReplyError as e:
            raise StoreError(f"redis error: {e}") from e
        except (ConnectionError, OSError) as e:
            raise StoreUnavailable(f"redis unreachable: {e}") from e

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA the script; if Redis lost it (restart, SCRIPT FLUSH), load it and retry
        once: a NOSCRIPT reply means nothing ran, so the retry cannot apply anything twice."""
        self.roundtrips += 1
        try:
            return await self._client.execute("EVALSHA", self._shas[name], len(keys), *keys, *args)
        except ReplyError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise StoreError(f"redis error: {e}") from e
        except (ConnectionError, OSError) as e:
            raise StoreUnavailable(f"redis unreachable: {e}") from e
        await self._call("SCRIPT", "LOAD", self._bodies[name])
        return await self._call("EVALSHA", self._shas[name], len(keys), *keys, *args)

    def _g(self, gid: str) -> str:
        return f"{self._p}:g:{gid}"

    def _b(self, gid: str) -> str:
        return f"{self._p}:b:{gid}"

    @property
    def _cron(self) -> str:
        return f"{self._p}:cron"

    @property
    def _fin(self) -> str:
        return f"{self._p}:fin"

    @property
    def _all(self) -> str:
        return f"{self._p}:all"

    def _kv(self, cat: str) -> list[str]:
        return [f"{self._p}:kv:{cat}", f"{self._p}:kvi:{cat}", f"{self._p}:kvseq"]

    # ---- lifecycle --------------------------------------------------------------------
    async def open(self) -> None:
        """Ping and load the scripts (so the first EVALSHA of each does not miss)."""
        await self._call("PING")
        for name, body in self._bodies.items():
            sha = await self._call("SCRIPT", "LOAD", body)
            if sha.decode() != self._shas[name]:  # would make every EVALSHA miss
                raise StoreError(f"redis: unexpected SHA for script {name}: {sha!r}")

    async def close(self) -> None:
        """Close the connection."""
        await self._client.close()

    async def ping(self) -> None:
        """See `dtmx.stores.base.Store.ping`."""
        await self._call("PING")

    # ---- transactions -----------------------------------------------------------------
    async def create(self, *, trans: Transaction, branches: Sequence[Branch]) -> bool:
        """See `dtmx.stores.base.Store.create`."""
        check_unique(branches)
        fields = encode_trans(trans)
        args: list[Any] = [
            self._p,
            trans.gid,
            "1" if trans.status.finished else "0",
            num(trans.update_time),
            self._fttl_ms,
            self._dttl_ms,
            len(fields),
            *flat(fields),
        ]
        for b in branches:
            args += encode_branch(b)
        keys = [
            self._g(trans.gid),
            self._b(trans.gid),
            self._cron,
            self._fin,
            self._all,
            f"{self._p}:seq",
            f"{self._p}:sweep",
        ]
        return bool(await self._run("create", keys, args))

    async def get(self, *, gid: str) -> Transaction | None:
        """See `dtmx.stores.base.Store.get`."""
        raw: list[bytes] = await self._call("HGETALL", self._g(gid))
        return decode_trans(pairs(raw)) if raw else None

    async def get_branches(self, *, gid: str) -> list[Branch]:
        """See `dtmx.stores.base.Store.get_branches`."""
        raw: list[bytes] = await self._call("HGETALL", self._b(gid))
        return decode_branches(gid, pairs(raw))

    async def update(
        self,
        *,
        gid: str,
        now: float,
        expect_status: Status,
        expect_owner: str | None,
        change: Change,
    ) -> bool:
        """See `dtmx.stores.base.Store.update`."""
        fields = change_fields(change, now)
        after = change.status if change.status is not None else expect_status
        args: list[Any] = [
            gid,
            expect_status.value,
            "0" if expect_owner is None else "1",
            expect_owner or "",
            "1" if after.finished else "0",
            num(now),
            self._fttl_ms,
            self._dttl_ms,
            len(fields),
            *flat(fields),
        ]
        for bu in change.branches:
            # a branch op that ends (succeed or failed) gets finish_time, as DTM and the SQL
            # stores do
            stamp = "f" if bu.status in (Status.SUCCEED, Status.FAILED) else ""
            args += [branch_key(bu.branch_id, bu.op), bu.status.value, stamp]
        keys = [self._g(gid), self._b(gid), self._cron, self._fin]
        return bool(await self._run("update", keys, args))

    async def take(
        self,
        *,
        gid: str,
        now: float,
        expect_status: Status,
        expect_type: TransType | None = None,
        change: Change,
    ) -> tuple[Transaction, list[Branch]] | None:
        """See `dtmx.stores.base.Store.take`."""
        if change.branches:
            raise ValueError("take does not write branches; use update")
        after = change.status if change.status is not None else expect_status
        args: list[Any] = [
            gid,
            expect_status.value,
            "" if expect_type is None else expect_type.value,
            "1" if after.finished else "0",
            num(now),
            self._fttl_ms,
            self._dttl_ms,
            *flat(change_fields(change, now)),
        ]
        keys = [self._g(gid), self._b(gid), self._cron, self._fin]
        res = await self._run("take", keys, args)
        if not res:
            return None
        raw_g, raw_b = res
        return decode_trans(pairs(raw_g)), decode_branches(gid, pairs(raw_b))

    async def add_branches(
        self, *, gid: str, now: float, branches: Sequence[Branch], expect_status: Status
    ) -> bool:
        """See `dtmx.stores.base.Store.add_branches`."""
        check_unique(branches)
        args: list[Any] = [expect_status.value]
        for b in branches:
            args += encode_branch(b)
        res = await self._run("add_branches", [self._g(gid), self._b(gid)], args)
        if res == -1:
            raise DuplicateBranch(gid=gid)
        return bool(res)

    async def claim_due(
        self, *, now: float, lease: float, owner: str, limit: int
    ) -> list[Transaction]:
        """See `dtmx.stores.base.Store.claim_due`."""
        if limit <= 0:
            return []
        args = [self._p, num(now), num(now + lease), owner, limit, self._dttl_ms]
        rows: list[list[bytes]] = await self._run("claim_due", [self._cron], args)
        return [decode_trans(pairs(row)) for row in rows]

    async def oldest_due(self, *, now: float) -> float | None:
        """See `dtmx.stores.base.Store.oldest_due`."""
        # the cron set may hold entries whose keys expired; claim_due drops those, and until
        # then they count here: an upper bound of the lag, as the gauge documents
        got = await self._call("ZRANGEBYSCORE", self._cron, "-inf", num(now), "WITHSCORES",
                               "LIMIT", "0", "1")
        return float(got[1]) if got else None

    async def reset_next_cron_time(self, *, gid: str, now: float) -> bool:
        """See `dtmx.stores.base.Store.reset_next_cron_time`."""
        args = [gid, num(now), self._dttl_ms, *_FINISHED]
        return bool(await self._run("reset_next_cron_time", [self._g(gid), self._cron], args))

    async def reset_cron_time(self, *, now: float, after: float, limit: int) -> tuple[int, bool]:
        """See `dtmx.stores.base.Store.reset_cron_time`."""
        args = [self._p, num(now), num(now + after), limit]
        count, more = await self._run("reset_cron_time", [self._cron], args)
        return int(count), bool(more)

    async def scan(
        self, *, position: str, limit: int, filters: ScanFilter
    ) -> tuple[list[Transaction], str]:
        """See `dtmx.stores.base.Store.scan`."""
        args = [
            self._p,
            position,
            limit,
            filters.status.value if filters.status else "",
            filters.trans_type.value if filters.trans_type else "",
            opt_num(filters.create_time_start),
            opt_num(filters.create_time_end),
            _SCAN_BUDGET,
            filters.gid_prefix,
        ]
        rows, pos = await self._run("scan", [self._all], args)
        return [decode_trans(pairs(row)) for row in rows], pos.decode()

    async def expire_finished(self, *, before: float, limit: int) -> int:
        """Delete finished transactions now; Redis TTLs (finished_ttl) would also do it."""
        keys = [self._fin, self._all, self._cron]
        return int(await self._run("expire_finished", keys, [self._p, num(before), limit]))

    # ---- key-value --------------------------------------------------------------------
    async def kv_find(self, *, cat: str, key: str) -> KV | None:
        """See `dtmx.stores.base.Store.kv_find`."""
        rec: bytes | None = await self._call("HGET", self._kv(cat)[0], key)
        return None if rec is None else decode_kv(cat, key, rec)

    async def kv_scan(self, *, cat: str, position: str, limit: int) -> tuple[list[KV], str]:
        """Newest first, like the SQL stores."""
        items, pos = await self._run("kv_scan", self._kv(cat)[:2], [position, limit])
        kvs = [decode_kv(cat, k.decode(), rec) for k, rec in pairs(items).items()]
        return kvs, pos.decode()

    async def kv_create(self, *, cat: str, key: str, value: str, now: float) -> bool:
        """See `dtmx.stores.base.Store.kv_create`."""
        rec = encode_kv(1, num(now), num(now), value)
        return bool(await self._run("kv_create", self._kv(cat), [key, rec]))

    async def kv_update(
        self, *, cat: str, key: str, value: str, expect_version: int, now: float
    ) -> bool:
        """See `dtmx.stores.base.Store.kv_update`."""
        args = [key, str(expect_version), value, num(now)]
        return bool(await self._run("kv_update", self._kv(cat)[:1], args))

    async def kv_delete(self, *, cat: str, key: str) -> bool:
        """See `dtmx.stores.base.Store.kv_delete`."""
        return bool(await self._run("kv_delete", self._kv(cat)[:2], [key]))
