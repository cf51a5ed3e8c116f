"""The Redis store: every verb on one transaction is one Lua script (or one plain
command), so one round trip; verbs over many (claim, scan, expiry) fan out over partitions.

Key layout in `redis_layout`: each transaction lives in one of `partitions` partitions whose
keys share a hash tag, so in a Redis Cluster the partitions spread over every master while
a transaction's keys and its partition's indexes stay in one slot for the scripts. Globals
are hashes (the scripts read status, owner and next_cron_time without decoding anything);
branch data stays bytes end to end. The layout (the number of partitions) is recorded in
the store at first open and checked at every open; a store in the single-slot layout of
earlier dtmx versions is refused with a pointer to `dtmx migrate` (`redis_migrate`).

Polling is divided: each partition has a lease (owner = this store's `node`, until = the
claim's time + lease); servers register in a shared list, each holds at most its share of
the partitions and claims only from those, and takes over partitions whose lease ran out.

Lifetimes follow DTM's idea: unfinished transactions get `data_ttl` refreshed on each write;
a finished one leaves the cron index and expires `finished_ttl` after it finished. The
`all` indexes (for `scan`) are cleaned lazily by scans and by a small sweep on each create.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dtmx.core.models import (
    KV,
    Branch,
    CallRecord,
    Change,
    ScanFilter,
    Status,
    Transaction,
    TransType,
)
from dtmx.errors import DuplicateBranch
from dtmx.stores.redis_base import RedisBase
from dtmx.stores.redis_codec import (
    change_fields,
    check_unique,
    create_branch_args,
    decode_branches,
    decode_calls,
    decode_first_calls,
    decode_kv,
    decode_trans,
    encode_branch,
    encode_kv,
    encode_trans,
    flat,
    num,
    op_args,
    opt_num,
    pairs,
)
from dtmx.stores.redis_layout import ScanPart, allocate, merge_scan

_FINISHED = (Status.SUCCEED.value, Status.FAILED.value)
# how many `all` index entries one scan call may examine (over all partitions) before
# returning a partial page
_SCAN_BUDGET = 10_000


def _ms(t: float) -> int:
    # creation millisecond for the scan order, clamped to the 42 bits it has
    return min(max(int(t * 1000), 0), (1 << 42) - 1)


# ---- the store ------------------------------------------------------------------------
class RedisStore(RedisBase):
    """`Store` on Redis or a Redis Cluster through our pipelined RESP client.

    See the module docstring for the layout, `RedisBase` for connections and options.
    """

    # ---- transactions -----------------------------------------------------------------
    async def create(self, *, trans: Transaction, branches: Sequence[Branch]) -> bool:
        """See `dtmx.stores.base.Store.create`."""
        bargs = create_branch_args(branches)
        # the 'i:' fields made for the script tell duplicates apart in a set of strings;
        # check_unique names the duplicate
        if bargs[:1] != ["u"] or len(set(bargs[5::2])) != len(branches):
            check_unique(branches)
        p = self.layout.part(trans.gid)
        tag = self.layout.tags[p]
        fields = encode_trans(trans)
        args: list[Any] = [
            tag,
            trans.gid,
            "1" if trans.status.finished else "0",
            num(trans.update_time),
            self._fttl_ms,
            self._dttl_ms,
            len(fields),
            *flat(fields),
        ]
        args += bargs
        args += [_ms(trans.create_time), self._n, p]
        keys = [f"{tag}:g:{trans.gid}", f"{tag}:b:{trans.gid}", f"{tag}:cron", f"{tag}:fin",
                f"{tag}:all", f"{tag}:seq", f"{tag}:sweep"]
        return bool(await self._run("create", keys, args))

    async def get(self, *, gid: str) -> Transaction | None:
        """See `dtmx.stores.base.Store.get`."""
        g = self._g(gid)
        raw: list[bytes] = await self._call(g, "HGETALL", g)
        return decode_trans(pairs(raw)) if raw else None

    async def get_branches(self, *, gid: str) -> list[Branch]:
        """See `dtmx.stores.base.Store.get_branches`."""
        # a script rather than HGETALL: ops whose calls predate schema v3 are counted from
        # the history (prelude.lua, with_history_counts)
        raw: list[bytes] = await self._run("branches", [self._b(gid), self._c(gid)], [])
        return decode_branches(gid, pairs(raw))

    async def update(
        self,
        *,
        gid: str,
        now: float,
        expect_status: Status,
        expect_owner: str | None,
        change: Change,
        expect_type: TransType | None = None,
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
            "" if expect_type is None else expect_type.value,
            len(fields),
            *flat(fields),
        ]
        args += op_args(change)
        return bool(await self._run("update", [*self._keys(gid), self._c(gid)], args))

    async def get_calls(self, *, gid: str) -> list[CallRecord]:
        """See `dtmx.stores.base.Store.get_calls`."""
        c, b = self._c(gid), self._b(gid)
        # both keys are in the gid's partition: one node, one pipelined send
        raw, braw = await self._each([self._call(c, "HGETALL", c),
                                      self._call(b, "HGETALL", b)])
        return sorted([*decode_first_calls(pairs(braw)), *decode_calls(pairs(raw))],
                      key=lambda r: (r.start, r.branch_id, r.op.value, r.attempt))

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
        if change.branches or change.calls:
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
        res = await self._run("take", [*self._keys(gid), self._c(gid)], args)
        if not res:
            return None
        raw_g, raw_b = res
        return decode_trans(pairs(raw_g)), decode_branches(gid, pairs(raw_b))

    async def add_branches(
        self,
        *,
        gid: str,
        now: float,
        branches: Sequence[Branch],
        expect_status: Status,
        expect_type: TransType | None = None,
        max_ops: int | None = None,
    ) -> bool:
        """See `dtmx.stores.base.Store.add_branches`."""
        check_unique(branches)
        args: list[Any] = [expect_status.value, expect_type.value if expect_type else "",
                           "" if max_ops is None else max_ops]
        for b in branches:
            args += encode_branch(b)
        res = await self._run("add_branches", [self._g(gid), self._b(gid)], args)
        if res == -1:
            raise DuplicateBranch(gid=gid)
        return bool(res)

    # ---- polling: partition leases, then claims ---------------------------------------
    async def _hold_partitions(self, now: float, lease: float) -> dict[int, tuple[float, int]]:
        """Register this server, renew/take/give up partition leases to hold its share;
        returns {partition held: (its earliest due time, number of due entries)}."""
        nodes = f"{self.layout.meta}:nodes"
        until = num(now + lease)
        servers = int(await self._run("nodes", [nodes], [self.node, num(now), until]))
        renew, acquire, release = self._book.plan(now, servers)
        lay = self.layout

        def lease_call(p: int, mode: str) -> Any:
            return self._run("lease", [lay.key(p, "lease"), lay.key(p, "cron")],
                             [self.node, num(now), until, mode])

        asked = [*renew, *acquire]
        replies = await self._each([*(lease_call(p, "hold") for p in asked),
                                    *(lease_call(p, "release") for p in release)])
        due: dict[int, tuple[float, int]] = {}
        for p, r in zip(asked, replies, strict=False):
            held = bool(r[0])
            self._book.record(p, held, float(r[1]), now, recheck=lease / 4)
            if held and int(r[2]):
                due[p] = (float(r[3]), int(r[2]))
        for p in release:
            self._book.record(p, False, now, now, recheck=0.0)
        return due

    async def claim_due(
        self, *, now: float, lease: float, owner: str, limit: int
    ) -> list[Transaction]:
        """See `dtmx.stores.base.Store.claim_due`: from the partitions this server holds."""
        if limit <= 0:
            return []
        due = await self._hold_partitions(now, lease)
        # the partitions with the oldest due work first; concurrent claims of this server
        # start at different partitions among equals, so they spread out
        self._turn = (self._turn + 1) % self._n
        order = [(p, n) for p, (_first, n) in sorted(
            due.items(), key=lambda pd: (pd[1][0], (pd[0] - self._turn) % self._n))]
        lay = self.layout
        calls = [
            self._run("claim_due", [lay.key(p, "cron"), lay.key(p, "lease")],
                      [lay.tags[p], num(now), num(now + lease), owner, n, self._dttl_ms,
                       self.node])
            for p, n in allocate(order, limit)
        ]
        rows: list[list[bytes]] = [r for part in await self._each(calls) for r in part]
        return [decode_trans(pairs(row)) for row in rows]

    async def oldest_due(self, *, now: float) -> float | None:
        """See `dtmx.stores.base.Store.oldest_due`."""
        # the cron sets may hold entries whose keys expired; claim_due drops those, and until
        # then they count here: an upper bound of the lag, as the gauge documents
        keys = [self.layout.key(p, "cron") for p in range(self._n)]
        got = await self._each([
            self._call(k, "ZRANGEBYSCORE", k, "-inf", num(now), "WITHSCORES", "LIMIT", "0", "1")
            for k in keys
        ])
        firsts = [float(g[1]) for g in got if g]
        return min(firsts) if firsts else None

    async def reset_next_cron_time(self, *, gid: str, now: float) -> bool:
        """See `dtmx.stores.base.Store.reset_next_cron_time`."""
        args = [gid, num(now), self._dttl_ms, *_FINISHED]
        keys = self._keys(gid)
        return bool(await self._run("reset_next_cron_time", [keys[0], keys[2]], args))

    async def _counts(self, name: str, lo: str, hi: str) -> list[tuple[int, int]]:
        """(partition, ZCOUNT of its `name` index in [lo, hi]) for every partition."""
        keys = [self.layout.key(p, name) for p in range(self._n)]
        got = await self._each([self._call(k, "ZCOUNT", k, lo, hi) for k in keys])
        return [(p, int(c)) for p, c in enumerate(got)]

    async def reset_cron_time(self, *, now: float, after: float, limit: int) -> tuple[int, bool]:
        """See `dtmx.stores.base.Store.reset_cron_time`."""
        threshold = num(now + after)
        counts = await self._counts("cron", "(" + threshold, "+inf")
        lay = self.layout
        got = await self._each([
            self._run("reset_cron_time", [lay.key(p, "cron")], [lay.tags[p], num(now),
                                                                 threshold, n])
            for p, n in allocate(counts, limit)
        ])
        count = sum(int(c) for c, _more in got)
        more = any(bool(m) for _c, m in got) or sum(c for _p, c in counts) > limit
        return count, more

    async def scan(
        self, *, position: str, limit: int, filters: ScanFilter
    ) -> tuple[list[Transaction], str]:
        """See `dtmx.stores.base.Store.scan`. Every partition is asked for a page below
        `position` (one number for all: the scan order is unique across partitions)."""
        if position and not position.isdigit():
            return [], ""  # not a position this store ever gave out
        upper = "(" + position if position else "+inf"
        budget = max(100, _SCAN_BUDGET // self._n)
        lay = self.layout
        args = [
            upper,
            limit,
            filters.status.value if filters.status else "",
            filters.trans_type.value if filters.trans_type else "",
            opt_num(filters.create_time_start),
            opt_num(filters.create_time_end),
            budget,
            filters.gid_prefix,
        ]
        got = await self._each([
            self._run("scan", [lay.key(p, "all")], [lay.tags[p], *args]) for p in range(self._n)
        ])
        parts = [
            ScanPart([(int(float(sc)), row) for row, sc in zip(rows, scores, strict=True)],
                     int(float(front)) if front else None)
            for rows, scores, front in got
        ]
        page, pos = merge_scan(parts, limit)
        return [decode_trans(pairs(row)) for row in page], pos

    async def expire_finished(self, *, before: float, limit: int) -> int:
        """Delete finished transactions now; Redis TTLs (finished_ttl) would also do it."""
        counts = await self._counts("fin", "-inf", "(" + num(before))
        lay = self.layout
        got = await self._each([
            self._run("expire_finished",
                      [lay.key(p, "fin"), lay.key(p, "all"), lay.key(p, "cron")],
                      [lay.tags[p], num(before), n])
            for p, n in allocate(counts, limit)
        ])
        return sum(int(n) for n in got)

    # ---- key-value --------------------------------------------------------------------
    async def kv_find(self, *, cat: str, key: str) -> KV | None:
        """See `dtmx.stores.base.Store.kv_find`."""
        h = self._kv(cat)[0]
        rec: bytes | None = await self._call(h, "HGET", h, key)
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
