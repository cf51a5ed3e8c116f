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
from collections.abc import Callable, Sequence
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any

import orjson

from dtmx.core.models import (
    KV,
    Branch,
    Change,
    Op,
    Protocol,
    ScanFilter,
    Status,
    Transaction,
    TransOptions,
    TransType,
)
from dtmx.errors import ConfigError, DuplicateBranch, StoreError, StoreUnavailable
from dtmx.net.resp import Reader, RedisAddress, ReplyError, RespClient, default_reader

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
_OPTION_FIELDS = tuple(f.name for f in dc_fields(TransOptions) if f.name != "retry_count")
_TEXT_FIELDS = ("query_prepared", "custom_data", "owner", "rollback_reason", "result", "ext_data")
_OPTIONAL_TIMES = ("finish_time", "rollback_time", "next_cron_time")
# how many `all` index entries one scan call may examine before returning a partial page
_SCAN_BUDGET = 10_000


def _load_lua(name: str) -> str:
    body = (_LUA_DIR / f"{name}.lua").read_text()
    if name in _SCRIPTS_WITH_PRELUDE:
        return (_LUA_DIR / "prelude.lua").read_text() + "\n" + body
    return body


def _f(x: float) -> str:
    """A float as text that Redis scores and Python both read back exactly."""
    return repr(float(x))


def _opt_f(x: float | None) -> str:
    return "" if x is None else _f(x)


# ---- encoding (pure) ------------------------------------------------------------------
def encode_trans(t: Transaction) -> dict[str, str | bytes]:
    """Hash fields of a global transaction; empty and None values are left out."""
    opts = {name: getattr(t.options, name) for name in _OPTION_FIELDS}
    out: dict[str, str | bytes] = {
        "gid": t.gid,
        "trans_type": t.trans_type.value,
        "status": t.status.value,
        "protocol": t.protocol.value,
        "options": orjson.dumps(opts),
        "retry_count": str(t.options.retry_count),
        "create_time": _f(t.create_time),
        "update_time": _f(t.update_time),
        "next_cron_interval": _f(t.next_cron_interval),
    }
    for name in _TEXT_FIELDS:
        value: str = getattr(t, name)
        if value:
            out[name] = value
    for name in _OPTIONAL_TIMES:
        tv: float | None = getattr(t, name)
        if tv is not None:
            out[name] = _f(tv)
    return out


def decode_trans(raw: dict[bytes, bytes]) -> Transaction:
    """Inverse of `encode_trans` (fields and values as bytes, as Redis returns them)."""
    h = {k.decode(): v for k, v in raw.items()}
    opts: dict[str, Any] = orjson.loads(h["options"]) if "options" in h else {}
    options = TransOptions(
        **{k: v for k, v in opts.items() if k in _OPTION_FIELDS},
        retry_count=int(h.get("retry_count", b"0")),
    )
    extra: dict[str, Any] = {name: h[name].decode() for name in _TEXT_FIELDS if name in h}
    extra.update({name: float(h[name]) for name in _OPTIONAL_TIMES if name in h})
    return Transaction(
        gid=h["gid"].decode(),
        trans_type=TransType(h["trans_type"].decode()),
        status=Status(h["status"].decode()),
        protocol=Protocol(h["protocol"].decode()),
        options=options,
        create_time=float(h["create_time"]),
        update_time=float(h["update_time"]),
        next_cron_interval=float(h.get("next_cron_interval", b"0")),
        **extra,
    )


def branch_key(branch_id: str, op: Op) -> str:
    """Field-name key of a branch op; op never contains a newline, so it is unambiguous."""
    return f"{branch_id}\n{op.value}"


def encode_branch(b: Branch) -> list[str | bytes]:
    """The six script arguments of one branch (see add_branch in prelude.lua)."""
    # orjson never emits a raw newline, so the blob splits on its first one and the data
    # after it stays arbitrary bytes
    static = orjson.dumps([b.branch_id, b.op.value, b.url, b.create_time]) + b"\n" + b.data
    return [
        branch_key(b.branch_id, b.op),
        static,
        b.status.value,
        _f(b.update_time),
        _opt_f(b.finish_time),
        _opt_f(b.rollback_time),
    ]


def decode_branches(gid: str, raw: dict[bytes, bytes]) -> list[Branch]:
    """Branches of one gid from the HGETALL of its branch hash, in insertion order."""
    out: list[Branch] = []
    for i in range(1, int(raw.get(b"n", b"0")) + 1):
        static = raw.get(b"d:%d" % i)
        if static is None:  # cannot happen unless edited by hand; skip rather than crash
            continue
        head, _, data = static.partition(b"\n")
        branch_id, op, url, create_time = orjson.loads(head)
        fin, rb = raw.get(b"f:%d" % i), raw.get(b"r:%d" % i)
        out.append(
            Branch(
                gid=gid,
                branch_id=branch_id,
                op=Op(op),
                url=url,
                data=data,
                status=Status(raw[b"s:%d" % i].decode()),
                create_time=float(create_time),
                update_time=float(raw[b"u:%d" % i]),
                finish_time=None if fin is None else float(fin),
                rollback_time=None if rb is None else float(rb),
            )
        )
    return out


def check_unique(branches: Sequence[Branch]) -> None:
    """Raise DuplicateBranch if the batch itself repeats a (branch_id, op)."""
    seen: set[tuple[str, Op]] = set()
    for b in branches:
        if b.key in seen:
            raise DuplicateBranch(gid=b.gid, branch_id=b.branch_id, op=b.op.value)
        seen.add(b.key)


def change_fields(change: Change, now: float) -> dict[str, str]:
    """Global hash fields a `Change` writes at time `now`."""
    out = {"update_time": _f(now)}
    if change.status is not None:
        out["status"] = change.status.value
        if change.status is Status.SUCCEED:
            out["finish_time"] = _f(now)
        elif change.status is Status.FAILED:
            out["rollback_time"] = _f(now)
    if change.next_cron_time is not None:
        out["next_cron_time"] = _f(change.next_cron_time)
    if change.next_cron_interval is not None:
        out["next_cron_interval"] = _f(change.next_cron_interval)
    for name in ("owner", "rollback_reason", "result"):
        value: str | None = getattr(change, name)
        if value is not None:
            out[name] = value
    if change.retry_count is not None:
        out["retry_count"] = str(change.retry_count)
    return out


def _flat(d: dict[str, str] | dict[str, str | bytes]) -> list[str | bytes]:
    return [x for kv in d.items() for x in kv]


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _encode_kv(version: int, create_time: str, update_time: str, value: str) -> str:
    return f"{version}\n{create_time}\n{update_time}\n{value}"


def _decode_kv(cat: str, key: str, rec: bytes) -> KV:
    version, created, updated, value = rec.decode().split("\n", 3)
    return KV(
        cat=cat,
        k=key,
        v=value,
        version=int(version),
        create_time=float(created),
        update_time=float(updated),
    )


# ---- the store ------------------------------------------------------------------------
class RedisStore:
    """`Store` on Redis through our pipelined RESP client (`dtmx.net.resp`).

    See the module docstring for the layout. One pipelined connection by default carries
    all the concurrency: Redis runs one command at a time anyway, and one stream makes the
    largest batches (measured: 2 connections cost ~5% more CPU in the store floor, 4 more
    still). `pool_size` is accepted for the settings' MaxOpenConns and caps `connections`.
    Connecting and logging in give up after `connect_timeout`; a connection whose commands
    get no reply for `reply_timeout` is dropped (its callers get StoreUnavailable).
    `reader` picks the reply parser (hiredis when installed; tests also run the Python one).
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
        reader: Callable[[], Reader] = default_reader,
    ) -> None:
        self.roundtrips = 0
        self._p = prefix
        self._fttl_ms = str(int(finished_ttl * 1000))
        self._dttl_ms = str(int(data_ttl * 1000))
        try:
            address = RedisAddress.from_url(url)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self._client = RespClient(
            address,
            connections=max(1, min(connections, pool_size)),
            connect_timeout=connect_timeout,
            reply_timeout=reply_timeout,
            reader=reader,
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
        await self._client.close()

    async def ping(self) -> None:
        await self._call("PING")

    # ---- transactions -----------------------------------------------------------------
    async def create(self, *, trans: Transaction, branches: Sequence[Branch]) -> bool:
        check_unique(branches)
        fields = encode_trans(trans)
        args: list[Any] = [
            self._p,
            trans.gid,
            "1" if trans.status.finished else "0",
            _f(trans.update_time),
            self._fttl_ms,
            self._dttl_ms,
            len(fields),
            *_flat(fields),
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
        raw: list[bytes] = await self._call("HGETALL", self._g(gid))
        return decode_trans(_pairs(raw)) if raw else None

    async def get_branches(self, *, gid: str) -> list[Branch]:
        raw: list[bytes] = await self._call("HGETALL", self._b(gid))
        return decode_branches(gid, _pairs(raw))

    async def update(
        self,
        *,
        gid: str,
        now: float,
        expect_status: Status,
        expect_owner: str | None,
        change: Change,
    ) -> bool:
        fields = change_fields(change, now)
        after = change.status if change.status is not None else expect_status
        args: list[Any] = [
            gid,
            expect_status.value,
            "0" if expect_owner is None else "1",
            expect_owner or "",
            "1" if after.finished else "0",
            _f(now),
            self._fttl_ms,
            self._dttl_ms,
            len(fields),
            *_flat(fields),
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
        if change.branches:
            raise ValueError("take does not write branches; use update")
        after = change.status if change.status is not None else expect_status
        args: list[Any] = [
            gid,
            expect_status.value,
            "" if expect_type is None else expect_type.value,
            "1" if after.finished else "0",
            _f(now),
            self._fttl_ms,
            self._dttl_ms,
            *_flat(change_fields(change, now)),
        ]
        keys = [self._g(gid), self._b(gid), self._cron, self._fin]
        res = await self._run("take", keys, args)
        if not res:
            return None
        raw_g, raw_b = res
        return decode_trans(_pairs(raw_g)), decode_branches(gid, _pairs(raw_b))

    async def add_branches(
        self, *, gid: str, now: float, branches: Sequence[Branch], expect_status: Status
    ) -> bool:
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
        if limit <= 0:
            return []
        args = [self._p, _f(now), _f(now + lease), owner, limit, self._dttl_ms]
        rows: list[list[bytes]] = await self._run("claim_due", [self._cron], args)
        return [decode_trans(_pairs(row)) for row in rows]

    async def oldest_due(self, *, now: float) -> float | None:
        # the cron set may hold entries whose keys expired; claim_due drops those, and until
        # then they count here: an upper bound of the lag, as the gauge documents
        got = await self._call("ZRANGEBYSCORE", self._cron, "-inf", _f(now), "WITHSCORES",
                               "LIMIT", "0", "1")
        return float(got[1]) if got else None

    async def reset_next_cron_time(self, *, gid: str, now: float) -> bool:
        args = [gid, _f(now), self._dttl_ms, *_FINISHED]
        return bool(await self._run("reset_next_cron_time", [self._g(gid), self._cron], args))

    async def reset_cron_time(self, *, now: float, after: float, limit: int) -> tuple[int, bool]:
        args = [self._p, _f(now), _f(now + after), limit]
        count, more = await self._run("reset_cron_time", [self._cron], args)
        return int(count), bool(more)

    async def scan(
        self, *, position: str, limit: int, filters: ScanFilter
    ) -> tuple[list[Transaction], str]:
        args = [
            self._p,
            position,
            limit,
            filters.status.value if filters.status else "",
            filters.trans_type.value if filters.trans_type else "",
            _opt_f(filters.create_time_start),
            _opt_f(filters.create_time_end),
            _SCAN_BUDGET,
        ]
        rows, pos = await self._run("scan", [self._all], args)
        return [decode_trans(_pairs(row)) for row in rows], pos.decode()

    async def expire_finished(self, *, before: float, limit: int) -> int:
        """Delete finished transactions now; Redis TTLs (finished_ttl) would also do it."""
        keys = [self._fin, self._all, self._cron]
        return int(await self._run("expire_finished", keys, [self._p, _f(before), limit]))

    # ---- key-value --------------------------------------------------------------------
    async def kv_find(self, *, cat: str, key: str) -> KV | None:
        rec: bytes | None = await self._call("HGET", self._kv(cat)[0], key)
        return None if rec is None else _decode_kv(cat, key, rec)

    async def kv_scan(self, *, cat: str, position: str, limit: int) -> tuple[list[KV], str]:
        """Newest first, like the SQL stores."""
        flat, pos = await self._run("kv_scan", self._kv(cat)[:2], [position, limit])
        kvs = [_decode_kv(cat, k.decode(), rec) for k, rec in _pairs(flat).items()]
        return kvs, pos.decode()

    async def kv_create(self, *, cat: str, key: str, value: str, now: float) -> bool:
        rec = _encode_kv(1, _f(now), _f(now), value)
        return bool(await self._run("kv_create", self._kv(cat), [key, rec]))

    async def kv_update(
        self, *, cat: str, key: str, value: str, expect_version: int, now: float
    ) -> bool:
        args = [key, str(expect_version), value, _f(now)]
        return bool(await self._run("kv_update", self._kv(cat)[:1], args))

    async def kv_delete(self, *, cat: str, key: str) -> bool:
        return bool(await self._run("kv_delete", self._kv(cat)[:2], [key]))
