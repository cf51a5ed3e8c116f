"""`MemoryStore`: the `dtmx.stores.base.Store` contract in memory, for the simulation.

Each verb is one atomic step because it never awaits: under a single event loop nothing
can interleave with it. What a real backend adds (latency, errors, a reply lost after the
commit) is the simulation's to inject, around the verbs (`sim.world.NodeStore`), not here.
Rows are copied in and out, as a database would: a caller mutating what it got back
changes nothing stored. The contract suite (tests/integration/stores) runs on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from dtmx.core.models import (
    KV,
    UNFINISHED,
    Branch,
    CallRecord,
    Change,
    ScanFilter,
    Status,
    Transaction,
    TransType,
)
from dtmx.errors import DuplicateBranch

#: Called before every status change is applied: (row as stored before, the change).
StatusHook = Callable[[Transaction, Change], None]


def _copy_trans(t: Transaction) -> Transaction:
    o = t.options
    return replace(t, options=replace(o, branch_headers=dict(o.branch_headers),
                                      passthrough_headers=list(o.passthrough_headers)))


@dataclass(slots=True)
class _Row:
    id: int
    trans: Transaction
    branches: list[Branch]
    #: call history per branch op, oldest first
    calls: dict[tuple[str, str], list[CallRecord]] = field(default_factory=dict)


class MemoryStore:
    """A `Store` in a dict. `on_status` (optional) sees every status change first."""

    def __init__(self, on_status: StatusHook | None = None) -> None:
        self.roundtrips = 0
        self._rows: dict[str, _Row] = {}
        self._kv: dict[tuple[str, str], tuple[int, KV]] = {}
        self._seq = 0
        self._on_status = on_status

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to close; the data stays (a restarted node sees it)."""

    async def ping(self) -> None:
        """Always reachable: outages are injected by the simulation."""
        self.roundtrips += 1

    def _next_id(self) -> int:
        self._seq += 1
        return self._seq

    # ---- transactions -------------------------------------------------------------
    async def create(self, *, trans: Transaction, branches: Sequence[Branch]) -> bool:
        """See `Store.create`."""
        self.roundtrips += 1
        keys = [b.key for b in branches]
        if len(set(keys)) != len(keys):
            raise DuplicateBranch(gid=trans.gid)
        if trans.gid in self._rows:
            return False
        rid = self._next_id()
        stored = _copy_trans(trans)
        stored.id = rid
        self._rows[trans.gid] = _Row(rid, stored, [replace(b) for b in branches])
        return True

    async def get(self, *, gid: str) -> Transaction | None:
        """See `Store.get`."""
        self.roundtrips += 1
        row = self._rows.get(gid)
        return _copy_trans(row.trans) if row else None

    async def get_branches(self, *, gid: str) -> list[Branch]:
        """See `Store.get_branches`."""
        self.roundtrips += 1
        row = self._rows.get(gid)
        return [replace(b) for b in row.branches] if row else []

    async def get_calls(self, *, gid: str) -> list[CallRecord]:
        """See `Store.get_calls`."""
        self.roundtrips += 1
        row = self._rows.get(gid)
        got = [c for kept in row.calls.values() for c in kept] if row else []
        return sorted(got, key=lambda c: (c.start, c.branch_id, c.op.value, c.attempt))

    def _apply(self, row: _Row, now: float, change: Change) -> None:
        for c in change.calls:
            kept = row.calls.setdefault((c.branch_id, c.op.value), [])
            if c.attempt == 0:  # numbered here
                kept.append(replace(c, attempt=kept[-1].attempt + 1 if kept else 1))
            else:  # numbered by the engine; a first call lives in its op's row
                b = next((b for b in row.branches if b.key == (c.branch_id, c.op)), None)
                if b is not None:
                    b.calls = max(b.calls, c.attempt)
                elif c.attempt == 1:
                    continue  # no row to keep it in, as an SQL UPDATE matching nothing
                kept.append(c)
            if len(kept) > change.keep_calls:
                del kept[1:len(kept) - change.keep_calls + 1]
        t = row.trans
        if change.status is not None:
            if self._on_status is not None:
                self._on_status(_copy_trans(t), change)
            t.status = change.status
            if change.status is Status.SUCCEED:
                t.finish_time = now
            elif change.status is Status.FAILED:
                t.rollback_time = now
        t.update_time = now
        if change.next_cron_time is not None:
            t.next_cron_time = change.next_cron_time
        if change.next_cron_interval is not None:
            t.next_cron_interval = change.next_cron_interval
        if change.owner is not None:
            t.owner = change.owner
        if change.rollback_reason is not None:
            t.rollback_reason = change.rollback_reason
        if change.result is not None:
            t.result = change.result
        if change.retry_count is not None:
            t.options = replace(t.options, retry_count=change.retry_count)
        if change.branches:
            by_key = {b.key: b for b in row.branches}
            for u in change.branches:
                b = by_key.get((u.branch_id, u.op))
                if b is None:
                    continue  # an UPDATE matching no branch row changes nothing
                b.status = u.status
                b.update_time = now
                b.finish_time = now if u.status.finished else None

    async def update(self, *, gid: str, now: float, expect_status: Status,
                     expect_owner: str | None, change: Change,
                     expect_type: TransType | None = None) -> bool:
        """See `Store.update`."""
        self.roundtrips += 1
        row = self._rows.get(gid)
        if row is None or row.trans.status is not expect_status:
            return False
        if expect_type is not None and row.trans.trans_type is not expect_type:
            return False
        if expect_owner is not None and row.trans.owner != expect_owner:
            return False
        self._apply(row, now, change)
        return True

    async def take(self, *, gid: str, now: float, expect_status: Status,
                   expect_type: TransType | None = None, change: Change
                   ) -> tuple[Transaction, list[Branch]] | None:
        """See `Store.take`."""
        if change.branches or change.calls:
            raise ValueError("take does not write branches; use update")
        self.roundtrips += 1
        row = self._rows.get(gid)
        if row is None or row.trans.status is not expect_status:
            return None
        if expect_type is not None and row.trans.trans_type is not expect_type:
            return None
        self._apply(row, now, change)
        return _copy_trans(row.trans), [replace(b) for b in row.branches]

    async def add_branches(self, *, gid: str, now: float, branches: Sequence[Branch],
                           expect_status: Status, expect_type: TransType | None = None,
                           max_ops: int | None = None) -> bool:
        """See `Store.add_branches`."""
        self.roundtrips += 1
        row = self._rows.get(gid)
        if row is None or row.trans.status is not expect_status:
            return False
        if expect_type is not None and row.trans.trans_type is not expect_type:
            return False
        if max_ops is not None and len(row.branches) + len(branches) > max_ops:
            return False
        have = {b.key for b in row.branches}
        keys = [b.key for b in branches]
        if len(set(keys)) != len(keys) or have.intersection(keys):
            raise DuplicateBranch(gid=gid)
        row.branches.extend(replace(b) for b in branches)
        return True

    def _due(self, now: float) -> list[_Row]:
        due = [r for r in self._rows.values() if r.trans.status in UNFINISHED
               and r.trans.next_cron_time is not None and r.trans.next_cron_time <= now]
        due.sort(key=lambda r: (r.trans.next_cron_time or 0.0, r.trans.gid))
        return due

    async def claim_due(self, *, now: float, lease: float, owner: str, limit: int
                        ) -> list[Transaction]:
        """See `Store.claim_due`: the most overdue first."""
        self.roundtrips += 1
        out = []
        for r in self._due(now)[:limit]:
            r.trans.owner = owner
            r.trans.next_cron_time = now + lease
            out.append(_copy_trans(r.trans))
        return out

    async def oldest_due(self, *, now: float) -> float | None:
        """See `Store.oldest_due`."""
        self.roundtrips += 1
        due = self._due(now)
        return due[0].trans.next_cron_time if due else None

    async def reset_next_cron_time(self, *, gid: str, now: float) -> bool:
        """See `Store.reset_next_cron_time`."""
        self.roundtrips += 1
        row = self._rows.get(gid)
        if row is None or row.trans.status not in UNFINISHED:
            return False
        row.trans.next_cron_time = now
        return True

    async def reset_cron_time(self, *, now: float, after: float, limit: int
                              ) -> tuple[int, bool]:
        """See `Store.reset_cron_time`."""
        self.roundtrips += 1
        far = sorted((r for r in self._rows.values() if r.trans.status in UNFINISHED
                      and (r.trans.next_cron_time or 0.0) > now + after), key=lambda r: r.id)
        for r in far[:limit]:
            r.trans.next_cron_time = now
        return min(len(far), limit), len(far) > limit

    async def scan(self, *, position: str, limit: int, filters: ScanFilter
                   ) -> tuple[list[Transaction], str]:
        """See `Store.scan`: newest first; the position is the last row id shown."""
        self.roundtrips += 1
        below = int(position) if position else None
        f = filters
        rows = [
            r for r in sorted(self._rows.values(), key=lambda r: -r.id)
            if (below is None or r.id < below)
            and (f.status is None or r.trans.status is f.status)
            and (f.trans_type is None or r.trans.trans_type is f.trans_type)
            and (f.create_time_start is None or r.trans.create_time >= f.create_time_start)
            and (f.create_time_end is None or r.trans.create_time <= f.create_time_end)
            and r.trans.gid.startswith(f.gid_prefix)
        ]
        page = rows[:limit]
        nxt = str(page[-1].id) if len(rows) > limit and page else ""
        return [_copy_trans(r.trans) for r in page], nxt

    async def expire_finished(self, *, before: float, limit: int) -> int:
        """See `Store.expire_finished`."""
        self.roundtrips += 1
        old = [g for g, r in self._rows.items()
               if r.trans.status.finished and r.trans.update_time < before][:limit]
        for g in old:
            del self._rows[g]
        return len(old)

    # ---- key-value ----------------------------------------------------------------
    async def kv_find(self, *, cat: str, key: str) -> KV | None:
        """See `Store.kv_find`."""
        self.roundtrips += 1
        got = self._kv.get((cat, key))
        return got[1] if got else None

    async def kv_scan(self, *, cat: str, position: str, limit: int) -> tuple[list[KV], str]:
        """See `Store.kv_scan`: newest first."""
        self.roundtrips += 1
        below = int(position) if position else None
        rows = sorted(((i, kv) for (c, _), (i, kv) in self._kv.items()
                       if c == cat and (below is None or i < below)), key=lambda p: -p[0])
        page = rows[:limit]
        nxt = str(page[-1][0]) if len(rows) > limit and page else ""
        return [kv for _, kv in page], nxt

    async def kv_create(self, *, cat: str, key: str, value: str, now: float) -> bool:
        """See `Store.kv_create`."""
        self.roundtrips += 1
        if (cat, key) in self._kv:
            return False
        self._kv[(cat, key)] = (self._next_id(), KV(cat, key, value, 1, now, now))
        return True

    async def kv_update(self, *, cat: str, key: str, value: str, expect_version: int,
                        now: float) -> bool:
        """See `Store.kv_update`."""
        self.roundtrips += 1
        got = self._kv.get((cat, key))
        if got is None or got[1].version != expect_version:
            return False
        i, kv = got
        self._kv[(cat, key)] = (i, replace(kv, v=value, version=kv.version + 1, update_time=now))
        return True

    async def kv_delete(self, *, cat: str, key: str) -> bool:
        """See `Store.kv_delete`."""
        self.roundtrips += 1
        return self._kv.pop((cat, key), None) is not None

    # ---- for the simulation's checks (not part of the protocol) --------------------
    def peek(self, gid: str) -> tuple[Transaction, list[Branch]] | None:
        """The stored row and branches, without a round trip (the checker's view)."""
        row = self._rows.get(gid)
        return (row.trans, row.branches) if row else None

    def gids(self) -> list[str]:
        """Every stored gid, in creation order."""
        return list(self._rows)


