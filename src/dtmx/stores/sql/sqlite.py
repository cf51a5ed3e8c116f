"""SqliteStore: the SQL store in one SQLite file (WAL), the default store.

SQLite runs in process, so there is no network round trip to save: the multi-row verbs are
plain transactions. BEGIN IMMEDIATE (in the backend) takes the write lock first, which
serialises writers of several processes sharing the file; that is also what keeps two
claimers apart in `claim_due`. Connection set-up: `sqlite_driver`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dtmx.core.models import Branch, CallRecord, Change, Status, Transaction, TransType
from dtmx.stores.op_writes import OpWrite, op_writes
from dtmx.stores.sql.calls import (
    INSERT_CALL,
    INSERT_CALL_AT,
    TRIM_CALLS,
    TRIM_CALLS_BELOW,
    insert_call_args,
    insert_call_at_args,
    trim_below_args,
    trim_calls_args,
    update_branch_args,
    update_branch_columns,
    update_branch_sql,
)
from dtmx.stores.sql.conn import Row, UniqueViolation
from dtmx.stores.sql.dialect import Dialect
from dtmx.stores.sql.rows import (
    INSERT_BRANCH,
    INSERT_TRANS,
    SELECT_BRANCHES,
    TRANS_COLS,
    branch_columns,
    branch_params,
    trans_params,
)
from dtmx.stores.sql.sqlite_bulk import branch_inserts, branch_updates
from dtmx.stores.sql.sqlite_driver import SqliteBackend
from dtmx.stores.sql.store import BELOW_ROOM, SqlStore

#: Lock the global row while branches are added. (SQLite's write lock covers it.)
#: Args: gid, status, trans_type or None (any), gid, room (see BELOW_ROOM).
_LOCK_GLOBAL = (
    "SELECT id FROM trans_global WHERE gid = ? AND status = ?"
    f" AND trans_type = COALESCE(?, trans_type) AND {BELOW_ROOM}"
)


#: A create or update writing more rows than this runs on the worker thread (`off_loop`):
#: inline, 10,000 rows kept the event loop from answering anything for ~150 ms. Smaller
#: ones run inline: the hop costs the loop little, but the thread needs the GIL back
#: after each statement, and while the loop is busy it waits up to the switch interval
#: (5 ms) each time, holding the write lock (a saga's 33-row batch: 0.4 ms inline; on the
#: thread, with the loop kept busy, a median of 3.5-7 ms and a p90 of ~40 ms).
OFF_LOOP_ROWS = 1000


#: Up to this many rows a create inlines them row by row (executemany); more go as
#: multi-row statements (`sqlite_bulk`), which cost less from ~20 rows on (thread CPU of
#: the INSERTs and COMMIT: 4 rows 403 vs 475 us, 20 rows 665 vs 676, 200 rows 1,959 vs
#: 1,330).
ROW_BY_ROW = 32


class _GidExists(Exception):
    """The transaction row is there already."""


def _insert(db: sqlite3.Connection, trans: Transaction, branches: Sequence[Branch],
            d: Dialect) -> bool:
    """`_create_with_branches` as one transaction's statements on `db` (a worker thread's)."""
    try:
        db.execute(INSERT_TRANS, tuple(trans_params(trans, d)))
    except sqlite3.IntegrityError as e:
        if "UNIQUE" in str(e):  # the gid exists (off_loop rolls back)
            raise _GidExists from e
        raise
    for sql, args in branch_inserts(branch_columns(branches, d)):
        db.execute(sql, args)
    return True


#: A call, answering its attempt number.
_INSERT_CALL_RETURNING = f"{INSERT_CALL} RETURNING attempt"


class _Unmatched(Exception):
    """The compare-and-set found no row (off_loop rolls back)."""


@dataclass(slots=True)
class _UpdateRows:
    """The statements of `_update_with_rows` after its compare-and-set: single ones,
    executemany ones, then the history calls, each (INSERT, args, trim or None, trim args,
    keep: None = trim if given, else trim once the number the INSERT returns is past it);
    `rows`: how many rows they write."""

    cas: tuple[str, list[Any]]
    one: list[tuple[str, list[Any]]]
    many: list[tuple[str, list[list[Any]]]]
    calls: list[tuple[str, list[Any], str | None, list[Any], int | None]]
    rows: int


def _update_statements(cas: tuple[str, list[Any]], gid: str, now: float, change: Change,
                       d: Dialect) -> _UpdateRows:
    """The statements of `_update_with_rows`, built on the loop's thread."""
    out = _UpdateRows(cas, [], [], [], 0)
    history: list[CallRecord] = []
    if not change.calls:
        ts = d.ts(now)
        rows = [[b.status.value, ts, ts if b.status.finished else None, gid, b.branch_id,
                 b.op.value] for b in change.branches]
        out.rows = len(rows)
        if len(rows) > 1 and len({(r[-2], r[-1]) for r in rows}) == len(rows):
            cols = [list(c) for c in zip(*rows, strict=True)]
            out.one.extend(branch_updates((True, False, False), cols))
        else:  # one row, or an op twice (the last status wins)
            out.many.append((update_branch_sql(True, False, False), rows))
    else:
        ops, history = op_writes(change)  # one write per op
        out.rows = len(ops) + len(history)
        # by statement shape (the parts of update_branch_sql): usually one, each op's status
        # change with its first call
        shapes: dict[tuple[bool, bool, bool], list[OpWrite]] = {}
        for w in ops:
            parts = (w.status is not None, w.first is not None, w.count is not None)
            shapes.setdefault(parts, []).append(w)
        for parts, ws in shapes.items():
            if len(ws) == 1:  # a 2-step saga's: row by row costs less than the columns
                out.many.append((update_branch_sql(*parts),
                                 [update_branch_args(gid, now, ws[0], d)]))
            else:
                out.one.extend(branch_updates(parts, update_branch_columns(gid, now, ws, d)))
    keep = change.keep_calls
    for c in history:
        # in process, every statement costs CPU: trim only once there is more
        if c.attempt:
            over = c.attempt > keep
            out.calls.append((INSERT_CALL_AT, insert_call_at_args(gid, c, d),
                              TRIM_CALLS_BELOW if over else None,
                              trim_below_args(gid, c, keep) if over else [], None))
        else:
            out.calls.append((_INSERT_CALL_RETURNING, insert_call_args(gid, c, d),
                              TRIM_CALLS, trim_calls_args(gid, c, keep), keep))
    return out


def _apply_update(db: sqlite3.Connection, w: _UpdateRows, *, strict: bool = False) -> bool:
    """Run `w` in the transaction open on `db`; False (`strict`: _Unmatched) if the
    compare-and-set found no row, and then nothing else ran."""
    if db.execute(*w.cas).rowcount == 0:
        if strict:
            raise _Unmatched
        return False
    for sql, args in w.one:
        db.execute(sql, args)
    for sql, rows in w.many:
        db.executemany(sql, rows)
    for sql, args, trim, trim_args, keep in w.calls:
        cur = db.execute(sql, args)
        if trim is not None and (keep is None or int(cur.fetchone()[0]) > keep):
            db.execute(trim, trim_args)
    return True


class SqliteStore(SqlStore):
    """A store in the SQLite file `path` (created with its schema on first open, unless
    `create` is False)."""

    def __init__(self, path: str, *, create: bool = True) -> None:
        self._sqlite = SqliteBackend(path)
        super().__init__(self._sqlite, create=create)

    async def _create_with_branches(self, trans: Transaction, branches: Sequence[Branch]
                                    ) -> bool:
        d = self._d
        if len(branches) > OFF_LOOP_ROWS:
            self.roundtrips += 1
            try:
                return await self._sqlite.off_loop(lambda db: _insert(db, trans, branches, d))
            except _GidExists:
                return False
        async with self._tx() as tx:
            try:
                await tx.execute(INSERT_TRANS, trans_params(trans, d))
            except UniqueViolation:  # the gid exists
                tx.rollback_only()
                return False
            if len(branches) <= ROW_BY_ROW:
                await tx.executemany(INSERT_BRANCH, [branch_params(b, d) for b in branches])
                return True
            for sql, args in branch_inserts(branch_columns(branches, d)):
                await tx.execute(sql, args)
            return True

    async def _update_with_rows(self, cas: tuple[str, list[Any]], gid: str, now: float,
                                change: Change) -> bool:
        w = _update_statements(cas, gid, now, change, self._d)
        if w.rows > OFF_LOOP_ROWS:
            self.roundtrips += 1
            try:
                return await self._sqlite.off_loop(lambda db: _apply_update(db, w, strict=True))
            except _Unmatched:
                return False
        async with self._tx() as tx:
            if not await self._sqlite.run(lambda db: _apply_update(db, w)):
                tx.rollback_only()
                return False
            return True

    async def _take(self, cas: tuple[str, list[Any]], gid: str
                    ) -> tuple[list[Row], list[Row]] | None:
        sql, args = cas
        async with self._tx() as tx:
            trows = await tx.fetch(f"{sql} RETURNING {TRANS_COLS}", args)
            if not trows:
                tx.rollback_only()
                return None
            return trows, await tx.fetch(SELECT_BRANCHES, [gid])

    async def _add_branches(self, gid: str, now: float, branches: Sequence[Branch],
                            expect_status: Status, expect_type: TransType | None,
                            room: int) -> bool:
        async with self._tx() as tx:
            args = [gid, expect_status.value, expect_type and expect_type.value, gid, room]
            if not await tx.fetch(_LOCK_GLOBAL, args):
                tx.rollback_only()
                return False
            if branches:
                await tx.executemany(
                    INSERT_BRANCH, [branch_params(b, self._d, now) for b in branches]
                )
            return True

    async def claim_due(
        self, *, now: float, lease: float, owner: str, limit: int
    ) -> list[Transaction]:
        """See `dtmx.stores.base.Store.claim_due`."""
        async with self._tx() as tx:
            rows = await tx.fetch(*self._claim_statement(now, lease, owner, limit))
        return self._claimed(rows)
