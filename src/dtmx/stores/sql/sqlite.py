"""SqliteStore: the SQL store in one SQLite file (WAL), the default store.

SQLite runs in process, so there is no network round trip to save: the multi-row verbs are
plain transactions. BEGIN IMMEDIATE (in the backend) takes the write lock first, which
serialises writers of several processes sharing the file; that is also what keeps two
claimers apart in `claim_due`. Connection set-up: `sqlite_driver`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from dtmx.core.models import Branch, Change, Status, Transaction, TransType
from dtmx.stores.op_writes import op_writes
from dtmx.stores.sql.calls import (
    INSERT_CALL,
    INSERT_CALL_AT,
    TRIM_CALLS,
    TRIM_CALLS_BELOW,
    insert_call_args,
    insert_call_at_args,
    trim_below_args,
    trim_calls_args,
    update_branch,
)
from dtmx.stores.sql.conn import Row, UniqueViolation
from dtmx.stores.sql.dialect import Dialect
from dtmx.stores.sql.rows import (
    INSERT_BRANCH,
    INSERT_TRANS,
    SELECT_BRANCHES,
    TRANS_COLS,
    UPDATE_BRANCH,
    branch_columns,
    branch_params,
    trans_params,
)
from dtmx.stores.sql.sqlite_bulk import branch_inserts
from dtmx.stores.sql.sqlite_driver import SqliteBackend
from dtmx.stores.sql.store import BELOW_ROOM, SqlStore

#: Lock the global row while branches are added. (SQLite's write lock covers it.)
#: Args: gid, status, trans_type or None (any), gid, room (see BELOW_ROOM).
_LOCK_GLOBAL = (
    "SELECT id FROM trans_global WHERE gid = ? AND status = ?"
    f" AND trans_type = COALESCE(?, trans_type) AND {BELOW_ROOM}"
)


#: A create with more branch rows than this is written on a worker thread (`off_loop`):
#: inline, 10,000 rows kept the event loop from answering anything for ~150 ms.
OFF_LOOP_ROWS = 1000


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
            await tx.executemany(INSERT_BRANCH, [branch_params(b, d) for b in branches])
            return True

    async def _update_with_rows(self, cas: tuple[str, list[Any]], gid: str, now: float,
                                change: Change) -> bool:
        d = self._d
        async with self._tx() as tx:
            if await tx.execute(*cas) == 0:
                tx.rollback_only()
                return False
            if not change.calls:
                await tx.executemany(UPDATE_BRANCH, [
                    [b.status.value, d.ts(now), d.ts(now) if b.status.finished else None, gid,
                     b.branch_id, b.op.value]
                    for b in change.branches
                ])
                return True
            ops, history = op_writes(change)
            # one executemany per statement shape: usually one, each op's status change
            # with its first call
            shapes: dict[str, list[list[Any]]] = {}
            for w in ops:
                sql, args = update_branch(gid, now, w, d)
                shapes.setdefault(sql, []).append(args)
            for sql, rows in shapes.items():
                await tx.executemany(sql, rows)
            keep = change.keep_calls
            for c in history:
                # in process, every statement costs CPU: trim only once there is more
                if c.attempt:
                    await tx.execute(INSERT_CALL_AT, insert_call_at_args(gid, c, d))
                    if c.attempt > keep:
                        await tx.execute(TRIM_CALLS_BELOW, trim_below_args(gid, c, keep))
                    continue
                got = await tx.fetch(_INSERT_CALL_RETURNING, insert_call_args(gid, c, d))
                if int(got[0][0]) > keep:
                    await tx.execute(TRIM_CALLS, trim_calls_args(gid, c, keep))
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
