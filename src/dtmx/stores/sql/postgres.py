"""PostgresStore: the SQL store in PostgreSQL; connection set-up in `postgres_driver`,
the batched updates' statement in `postgres_updates`.

The multi-row verbs are each one statement with data-modifying CTEs (one round trip); the
statement's one row, one column says whether the global row matched (1) or not (0).
Branch rows travel as parallel arrays through unnest(...) WITH ORDINALITY, inserted in the
given order so their ids keep it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from ssl import SSLContext
from typing import Any

import orjson

from dtmx.core.models import Branch, Change, Status, Transaction, TransType
from dtmx.stores.sql.conn import Row
from dtmx.stores.sql.dialect import POSTGRES
from dtmx.stores.sql.postgres_driver import PostgresBackend
from dtmx.stores.sql.postgres_updates import columns, update_many_args, update_many_sql
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
#: CREATE for branches that share their status and times (a saga's or msg's at submit):
#: those bound once (args: the global row's, gid, the ops' data end to end, status,
#: create, update, finish and rollback time), then per op its url, branch_id and op, and
#: where its data starts in the bytes and how long it is, each column one JSON array
#: (`create_statement`). asyncpg spends ~1 us on each element of an array parameter (a
#: 1,000-step saga's 8,000 were ~8 ms of the create) and ~0.1 us on a JSON text.
CREATE_UNIFORM = (
    f"WITH g AS ({INSERT_TRANS} ON CONFLICT (gid) DO NOTHING RETURNING id),"
    f" b AS (INSERT INTO trans_branch_op ({BRANCH_INSERT_COLS})"
    " SELECT ?, u.url, substring(?::bytea FROM u.start::int + 1 FOR u.len::int),"
    " u.branch_id, u.op, ?, ?::timestamptz, ?::timestamptz, ?::timestamptz, ?::timestamptz"
    " FROM ROWS FROM (json_array_elements_text(?::json), json_array_elements_text(?::json),"
    " json_array_elements_text(?::json), json_array_elements_text(?::json),"
    " json_array_elements_text(?::json))"
    " WITH ORDINALITY AS u(url, branch_id, op, start, len, ord)"
    " WHERE EXISTS (SELECT 1 FROM g) ORDER BY u.ord RETURNING 1)"
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
    return [*(list(col) for col in columns(heads, 4)),
            *(list(col) for col in columns(rows, 10))]


def create_many_args(items: Sequence[tuple[Transaction, Sequence[Branch]]]) -> list[Any]:
    """The arguments of CREATE_MANY."""
    trans = [trans_params(t, POSTGRES) for t, _ in items]
    rows = [(t.gid, *_branch_row(b)) for t, branches in items for b in branches]
    return [*(list(col) for col in columns([tuple(r) for r in trans], 17)),
            *(list(col) for col in columns(rows, 10))]


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


def create_statement(trans: Transaction, branches: Sequence[Branch]) -> tuple[str, list[Any]]:
    """CREATE_UNIFORM with its arguments when the branches share their status and times,
    else CREATE with its arguments."""
    head = trans_params(trans, POSTGRES)
    if not branches:
        return CREATE, [*head, *_branch_arrays(trans.gid, branches, None)]
    b0 = branches[0]
    st, ct, ut, ft, rt = (b0.status, b0.create_time, b0.update_time, b0.finish_time,
                          b0.rollback_time)
    for b in branches:
        if (b.status != st or b.create_time != ct or b.update_time != ut
                or b.finish_time != ft or b.rollback_time != rt):
            return CREATE, [*head, *_branch_arrays(trans.gid, branches, None)]
    ts = POSTGRES.ts
    data = [b.data for b in branches]
    lens = [len(d) for d in data]
    starts = list(accumulate(lens, initial=0))
    starts.pop()
    # op: a StrEnum member is its wire string (orjson writes it as such)
    return CREATE_UNIFORM, [
        *head, trans.gid, b"".join(data), st.value, ts(ct or 0.0), ts(ut or 0.0), ts(ft),
        ts(rt), _json([b.url for b in branches]), _json([b.branch_id for b in branches]),
        _json([b.op for b in branches]), _json(starts), _json(lens),
    ]


def _json(values: list[Any]) -> str:
    return orjson.dumps(values).decode()


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
        return await self._matched(*create_statement(trans, branches))

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
