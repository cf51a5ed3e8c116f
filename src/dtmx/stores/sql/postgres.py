"""PostgresStore: the SQL store in PostgreSQL; connection set-up in `postgres_driver`.

The multi-row verbs are each one statement with data-modifying CTEs (one round trip); the
statement's one row, one column says whether the global row matched (1) or not (0).
Branch rows travel as parallel arrays through unnest(...) WITH ORDINALITY, inserted in the
given order so their ids keep it.
"""

from __future__ import annotations

from collections.abc import Sequence
from ssl import SSLContext
from typing import Any

from dtmx.core.models import Branch, CallRecord, Change, Status, Transaction, TransType
from dtmx.stores.op_writes import op_writes
from dtmx.stores.sql.calls import CALL_CTES, FIRST_CALL_COLS, call_arrays
from dtmx.stores.sql.conn import Row
from dtmx.stores.sql.dialect import POSTGRES
from dtmx.stores.sql.postgres_driver import PostgresBackend
from dtmx.stores.sql.rows import (
    BRANCH_COLS,
    BRANCH_INSERT_COLS,
    INSERT_TRANS,
    TRANS_COLS,
    TRANS_INSERT_COLS,
    CasUpdate,
    trans_params,
)
from dtmx.stores.sql.store import BELOW_ROOM, NO_LIMIT, NewBranches, NewTrans, SqlStore

#: Inserts the branch arrays (args: gid, then the 9 arrays of `_branch_arrays`) if the
#: CTE `g` has a row.
_INSERT_BRANCHES = (
    f"INSERT INTO trans_branch_op ({BRANCH_INSERT_COLS})"
    " SELECT ?, u.url, u.bin_data, u.branch_id, u.op, u.status, u.create_time,"
    " u.update_time, u.finish_time, u.rollback_time"
    " FROM unnest(?::text[], ?::bytea[], ?::text[], ?::text[], ?::text[],"
    " ?::timestamptz[], ?::timestamptz[], ?::timestamptz[], ?::timestamptz[])"
    " WITH ORDINALITY AS u(url, bin_data, branch_id, op, status, create_time, update_time,"
    " finish_time, rollback_time, ord)"
    " WHERE EXISTS (SELECT 1 FROM g) ORDER BY u.ord RETURNING 1"
)
#: The global row unless the gid exists, and its branches only if it was new.
CREATE = (
    f"WITH g AS ({INSERT_TRANS} ON CONFLICT (gid) DO NOTHING RETURNING id),"
    f" b AS ({_INSERT_BRANCHES})"
    " SELECT count(*) FROM g"
)
_TRANS_TYPES = (
    "text[], text[], text[], text[], text[], text[], text[], timestamptz[], timestamptz[],"
    " timestamptz[], timestamptz[], float8[], timestamptz[], text[], text[], text[], text[]"
)
#: Inserts branch rows given as arrays (a gid array first, then as in `_branch_arrays`)
#: for the gids the CTE `g` returned, in order.
_INSERT_BRANCHES_OF_G = (
    f"INSERT INTO trans_branch_op ({BRANCH_INSERT_COLS})"
    " SELECT u.gid, u.url, u.bin_data, u.branch_id, u.op, u.status, u.create_time,"
    " u.update_time, u.finish_time, u.rollback_time"
    " FROM unnest(?::text[], ?::text[], ?::bytea[], ?::text[], ?::text[], ?::text[],"
    " ?::timestamptz[], ?::timestamptz[], ?::timestamptz[], ?::timestamptz[])"
    " WITH ORDINALITY AS u(gid, url, bin_data, branch_id, op, status, create_time,"
    " update_time, finish_time, rollback_time, ord)"
    " WHERE u.gid IN (SELECT gid FROM g) ORDER BY u.ord RETURNING 1"
)
#: Several creates (distinct gids) in one statement: the global rows as arrays of the 17
#: TRANS_INSERT_COLS, those whose gid is new inserted; then the branch arrays, inserted
#: for the new gids only; the new gids.
CREATE_MANY = (
    f"WITH g AS (INSERT INTO trans_global ({TRANS_INSERT_COLS}) SELECT * FROM unnest("
    + ", ".join(f"?::{t.strip()}" for t in _TRANS_TYPES.split(","))
    + ") ON CONFLICT (gid) DO NOTHING RETURNING gid),"
    f" b AS ({_INSERT_BRANCHES_OF_G})"
    " SELECT gid FROM g"
)
#: Several add_branches (distinct gids) in one statement: per gid, the expected status,
#: type (NULL: any) and room, each global row that has them locked as ADD_BRANCHES locks
#: it; then the branch arrays, inserted for the matched gids only; the matched gids.
ADD_MANY = (
    "WITH a AS (SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::bigint[])"
    " AS a(gid, status, trans_type, room)),"
    " g AS (UPDATE trans_global AS t SET update_time = t.update_time FROM a"
    " WHERE t.gid = a.gid AND t.status = a.status"
    " AND t.trans_type = COALESCE(a.trans_type, t.trans_type)"
    " AND (SELECT count(*) FROM trans_branch_op AS o WHERE o.gid = a.gid) <= a.room"
    " RETURNING t.gid),"
    f" b AS ({_INSERT_BRANCHES_OF_G})"
    " SELECT gid FROM g"
)


def add_many_args(items: Sequence[NewBranches]) -> list[Any]:
    """The arguments of ADD_MANY."""
    heads = [(a.gid, a.expect_status.value, a.expect_type and a.expect_type.value, a.room)
             for a in items]
    rows = [(a.gid, *_branch_row(b, a.now)) for a in items for b in a.branches]
    return [*(list(col) for col in _columns(heads, 4)),
            *(list(col) for col in _columns(rows, 10))]


def create_many_args(items: Sequence[tuple[Transaction, Sequence[Branch]]]) -> list[Any]:
    """The arguments of CREATE_MANY."""
    trans = [trans_params(t, POSTGRES) for t, _ in items]
    rows = [(t.gid, *_branch_row(b)) for t, branches in items for b in branches]
    return [*(list(col) for col in _columns([tuple(r) for r in trans], 17)),
            *(list(col) for col in _columns(rows, 10))]


def _branch_row(b: Branch, now: float | None = None) -> tuple[Any, ...]:
    ts = POSTGRES.ts
    return (b.url, bytes(b.data), b.branch_id, b.op.value, b.status.value,
            ts(b.create_time or now or 0.0), ts(b.update_time or now or 0.0),
            ts(b.finish_time), ts(b.rollback_time))


#: Branches if the global row (args: gid, status, trans_type or None for any, gid, room) has
#: the status (and type) and room for them (BELOW_ROOM), locked meanwhile so a
#: concurrent status change cannot slip between the check and the insert. The lock is
#: taken with a no-op UPDATE rather than FOR UPDATE: it gives the row a new version
#: (xmin), which is how TAKE notices a registration it waited for.
ADD_BRANCHES = (
    "WITH g AS (UPDATE trans_global SET update_time = update_time"
    " WHERE gid = ? AND status = ? AND trans_type = COALESCE(?, trans_type)"
    f" AND {BELOW_ROOM.replace('<= ?', '<= ?::bigint')} RETURNING id),"
    f" b AS ({_INSERT_BRANCHES})"
    " SELECT count(*) FROM g"
)
#: The compare-and-set UPDATE ({cas}), then the branch updates only if it matched. Args:
#: the UPDATE's, now, the arrays branch_id, op, status, finish_time, and the gid.
UPDATE_WITH_BRANCHES = (
    "WITH g AS ({cas} RETURNING id),"
    " b AS (UPDATE trans_branch_op AS t SET status = u.status, update_time = ?,"
    " finish_time = COALESCE(u.finish_time, t.finish_time)"
    " FROM unnest(?::text[], ?::text[], ?::text[], ?::timestamptz[])"
    " AS u(branch_id, op, status, finish_time)"
    " WHERE t.gid = ? AND t.branch_id = u.branch_id AND t.op = u.op"
    " AND EXISTS (SELECT 1 FROM g) RETURNING 1)"
    " SELECT count(*) FROM g"
)
#: How many leading columns of a TAKE row belong to the global transaction.
TAKE_TRANS_WIDTH = len(TRANS_COLS.split(","))
#: The compare-and-set UPDATE ({cas}) and a read of the updated row with its branches: one
#: row per branch (global columns first), in branch id order; one row with NULL branch
#: columns if there are none; no row if the UPDATE matched nothing. Args: the UPDATE's,
#: then the gid. The branches are read from the statement's snapshot, taken when it began:
#: had the UPDATE waited for a concurrent ADD_BRANCHES to commit, that snapshot would miss
#: the new branches. So the UPDATE also requires the row version (xmin) the snapshot saw,
#: and matches nothing when the row changed meanwhile; the caller's retry sees it all.
TAKE = (
    f"WITH g AS ({{cas}} AND xmin = (SELECT xmin FROM trans_global WHERE gid = ?)"
    f" RETURNING {TRANS_COLS})"
    " SELECT g.*, " + ", ".join(f"b.{c.strip()}" for c in BRANCH_COLS.split(","))
    + " FROM g LEFT JOIN trans_branch_op AS b ON b.gid = g.gid ORDER BY b.id"
)


_U = ("gid text, expect_status text, expect_owner text, now timestamptz, status text,"
      " next_cron_time timestamptz, next_cron_interval float8, owner text,"
      " rollback_reason text, result text, retry_count bigint, expect_type text")
#: Several compare-and-set updates (distinct gids) in one statement: one row of the
#: arrays per update (columns as in `_U`), a column left NULL keeps the stored value as
#: in `Change`; the branch updates ({b}) of the rows that matched; the gids that matched.
_UPDATE_MANY = (
    "WITH u AS (SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::timestamptz[],"
    " ?::text[], ?::timestamptz[], ?::float8[], ?::text[], ?::text[], ?::text[], ?::bigint[],"
    " ?::text[])"
    f" AS u({', '.join(c.split()[0] for c in _U.split(', '))})),"
    " g AS (UPDATE trans_global AS t SET update_time = u.now,"
    " status = COALESCE(u.status, t.status),"
    f" finish_time = CASE WHEN u.status = '{Status.SUCCEED.value}' THEN u.now"
    " ELSE t.finish_time END,"
    f" rollback_time = CASE WHEN u.status = '{Status.FAILED.value}' THEN u.now"
    " ELSE t.rollback_time END,"
    " next_cron_time = COALESCE(u.next_cron_time, t.next_cron_time),"
    " next_cron_interval = COALESCE(u.next_cron_interval, t.next_cron_interval),"
    " owner = COALESCE(u.owner, t.owner),"
    " rollback_reason = COALESCE(u.rollback_reason, t.rollback_reason),"
    " result = COALESCE(u.result, t.result),"
    " options = CASE WHEN u.retry_count IS NULL THEN t.options ELSE"
    " (jsonb_set(COALESCE(NULLIF(t.options, ''), '{}')::jsonb, '{retry_count}',"
    " to_jsonb(u.retry_count)))::text END"
    " FROM u WHERE t.gid = u.gid AND t.status = u.expect_status"
    " AND (u.expect_owner IS NULL OR t.owner = u.expect_owner)"
    " AND (u.expect_type IS NULL OR t.trans_type = u.expect_type) RETURNING t.gid),"
    "{b} SELECT gid FROM g"
)
_B_STATUS = (
    " b AS (UPDATE trans_branch_op AS bt SET status = v.status, update_time = v.now,"
    " finish_time = COALESCE(v.finish_time, bt.finish_time)"
    " FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::timestamptz[],"
    " ?::timestamptz[]) AS v(gid, branch_id, op, status, now, finish_time)"
    " WHERE bt.gid = v.gid AND bt.branch_id = v.branch_id AND bt.op = v.op"
    " AND v.gid IN (SELECT gid FROM g) RETURNING 1)"
)
#: The branch rows' writes of updates with calls (`OpWrite`s, one row of the arrays per
#: op): a NULL status or count keeps the stored one, the first call is written if `first`.
_B_CALLS = (
    " b AS (UPDATE trans_branch_op AS bt SET status = COALESCE(v.status, bt.status),"
    " update_time = CASE WHEN v.status IS NULL THEN bt.update_time ELSE v.now END,"
    " finish_time = COALESCE(v.finish_time, bt.finish_time),"
    " calls = COALESCE(v.calls, bt.calls), "
    + ", ".join(f"{col} = CASE WHEN v.first THEN v.{col} ELSE bt.{col} END"
                for col in (c.strip() for c in FIRST_CALL_COLS.split(",")))
    + " FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::timestamptz[],"
    " ?::timestamptz[], ?::int[], ?::bool[], ?::timestamptz[], ?::float8[], ?::text[],"
    " ?::text[], ?::text[], ?::timestamptz[])"
    f" AS v(gid, branch_id, op, status, now, finish_time, calls, first, {FIRST_CALL_COLS})"
    " WHERE bt.gid = v.gid AND bt.branch_id = v.branch_id AND bt.op = v.op"
    " AND v.gid IN (SELECT gid FROM g) RETURNING 1)"
)
#: Several updates whose branch ops get statuses; args from `update_many_args`.
UPDATE_MANY = _UPDATE_MANY.replace("{b}", _B_STATUS)
#: Several updates with calls, each op's first call in its row.
UPDATE_MANY_CALLS = _UPDATE_MANY.replace("{b}", _B_CALLS)
#: ... and calls for the history too (args: UPDATE_MANY_CALLS', then CALL_CTES').
UPDATE_MANY_HISTORY = _UPDATE_MANY.replace("{b}", f"{_B_CALLS},{CALL_CTES}")


def update_many_args(items: Sequence[CasUpdate]) -> list[Any]:
    """The arguments of UPDATE_MANY."""
    ts = POSTGRES.ts
    rows = [
        (u.gid, u.expect_status.value, u.expect_owner, ts(u.now),
         c.status and c.status.value, ts(c.next_cron_time), c.next_cron_interval, c.owner,
         c.rollback_reason, c.result, c.retry_count, u.expect_type and u.expect_type.value)
        for u in items
        for c in (u.change,)
    ]
    out = [list(col) for col in _columns(rows, 12)]
    if not any(u.change.calls for u in items):
        branches = [
            (u.gid, b.branch_id, b.op.value, b.status.value, ts(u.now),
             ts(u.now) if b.status.finished else None)
            for u in items
            for b in u.change.branches
        ]
        return out + [list(col) for col in _columns(branches, 6)]
    ops: list[tuple[Any, ...]] = []
    history: list[tuple[str, int, list[CallRecord]]] = []
    for u in items:
        writes, calls = op_writes(u.change)
        for w in writes:
            st, c = w.status, w.first
            ops.append((
                u.gid, w.branch_id, w.op.value, st and st.value, ts(u.now),
                ts(u.now) if st is not None and st.finished else None, w.count,
                c is not None, c and ts(c.start), c and float(c.duration),
                c and c.outcome.value, c and c.reason, c and c.server,
                c and ts(c.next_retry)))
        if calls:
            history.append((u.gid, u.change.keep_calls, calls))
    out += [list(col) for col in _columns(ops, 14)]
    if history:
        out += call_arrays(history, POSTGRES)
    return out


def update_many_sql(items: Sequence[CasUpdate]) -> str:
    """The statement `update_many_args` gives the arguments of."""
    if not any(u.change.calls for u in items):
        return UPDATE_MANY
    if any(c.attempt != 1 for u in items for c in u.change.calls):
        return UPDATE_MANY_HISTORY
    return UPDATE_MANY_CALLS


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    return list(zip(*rows, strict=True)) if rows else [()] * width


def _branch_arrays(gid: str, branches: Sequence[Branch], now: float | None) -> list[Any]:
    ts = POSTGRES.ts
    return [
        gid,
        [b.url for b in branches],
        [bytes(b.data) for b in branches],
        [b.branch_id for b in branches],
        [b.op.value for b in branches],
        [b.status.value for b in branches],
        [ts(b.create_time or now or 0.0) for b in branches],
        [ts(b.update_time or now or 0.0) for b in branches],
        [ts(b.finish_time) for b in branches],
        [ts(b.rollback_time) for b in branches],
    ]


def add_branches_statement(gid: str, now: float, branches: Sequence[Branch],
                           expect_status: Status, expect_type: TransType | None = None,
                           room: int = NO_LIMIT) -> tuple[str, list[Any]]:
    """ADD_BRANCHES with its arguments."""
    return ADD_BRANCHES, [gid, expect_status.value, expect_type and expect_type.value, gid,
                          room, *_branch_arrays(gid, branches, now)]


class PostgresStore(SqlStore):
    """A store in PostgreSQL database `db` (which must exist), tables in `schema` (created
    if missing, with `create`)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5432,
        user: str = "postgres",
        password: str = "",
        db: str = "postgres",
        schema: str = "public",
        *,
        pool_size: int = 10,
        create: bool = True,
        ssl: SSLContext | None = None,
        batch_lanes: int = 0,
    ) -> None:
        backend = PostgresBackend(
            host=host, port=port, user=user, password=password, db=db, schema=schema,
            pool_size=pool_size, ssl=ssl,
        )
        super().__init__(backend, create=create, batch_lanes=batch_lanes)

    async def _matched(self, sql: str, args: Sequence[Any]) -> bool:
        async with self._session() as ex:
            return bool((await ex.fetch(sql, args))[0][0])

    async def _create_with_branches(self, trans: Transaction, branches: Sequence[Branch]
                                    ) -> bool:
        return await self._matched(CREATE, [
            *trans_params(trans, self._d), *_branch_arrays(trans.gid, branches, None)
        ])

    async def _update_one(self, u: CasUpdate) -> bool:
        if u.change.calls:  # the batched statement is the one that writes calls
            return (await self._update_many([u]))[0]
        return await super()._update_one(u)

    async def _update_with_rows(self, cas: tuple[str, list[Any]], gid: str, now: float,
                                change: Change) -> bool:
        branches = change.branches
        ts = self._d.ts
        return await self._matched(UPDATE_WITH_BRANCHES.format(cas=cas[0]), [
            *cas[1],
            ts(now),
            [b.branch_id for b in branches],
            [b.op.value for b in branches],
            [b.status.value for b in branches],
            [ts(now) if b.status.finished else None for b in branches],
            gid,
        ])

    async def _create_many(self, items: Sequence[NewTrans]) -> list[bool]:
        async with self._session() as ex:
            rows = await ex.fetch(CREATE_MANY, create_many_args(items))
        created = {r[0] for r in rows}
        return [t.gid in created for t, _ in items]

    async def _update_many(self, items: Sequence[CasUpdate]) -> list[bool]:
        async with self._session() as ex:
            rows = await ex.fetch(update_many_sql(items), update_many_args(items))
        matched = {r[0] for r in rows}
        return [u.gid in matched for u in items]

    async def _add_many(self, items: Sequence[NewBranches]) -> list[bool]:
        async with self._session() as ex:
            rows = await ex.fetch(ADD_MANY, add_many_args(items))
        matched = {r[0] for r in rows}
        return [a.gid in matched for a in items]

    async def _take(self, cas: tuple[str, list[Any]], gid: str
                    ) -> tuple[list[Row], list[Row]] | None:
        async with self._session() as ex:
            rows = await ex.fetch(TAKE.format(cas=cas[0]), [*cas[1], gid])
        if not rows:
            return None
        n = TAKE_TRANS_WIDTH
        # a LEFT JOIN: a transaction without branches comes back as one row of NULLs
        return [rows[0][:n]], [r[n:] for r in rows if r[n] is not None]

    async def _add_branches(self, gid: str, now: float, branches: Sequence[Branch],
                            expect_status: Status, expect_type: TransType | None,
                            room: int) -> bool:
        return await self._matched(*add_branches_statement(gid, now, branches, expect_status,
                                                           expect_type, room))

    async def claim_due(
        self, *, now: float, lease: float, owner: str, limit: int
    ) -> list[Transaction]:
        """See `dtmx.stores.base.Store.claim_due`. One statement, atomic; SKIP LOCKED keeps
        concurrent claimers apart."""
        async with self._session() as ex:
            rows = await ex.fetch(*self._claim_statement(now, lease, owner, limit))
        return self._claimed(rows)
