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

from dtmx.core.models import Branch, BranchUpdate, Status, Transaction
from dtmx.stores.sql.conn import Row
from dtmx.stores.sql.dialect import POSTGRES
from dtmx.stores.sql.postgres_driver import PostgresBackend
from dtmx.stores.sql.rows import (
    BRANCH_COLS,
    BRANCH_INSERT_COLS,
    INSERT_TRANS,
    TRANS_COLS,
    trans_params,
)
from dtmx.stores.sql.store import SqlStore

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
#: Branches if the global row (args: gid, status) has the status, locked meanwhile so a
#: concurrent status change cannot slip between the check and the insert. The lock is
#: taken with a no-op UPDATE rather than FOR UPDATE: it gives the row a new version
#: (xmin), which is how TAKE notices a registration it waited for.
ADD_BRANCHES = (
    "WITH g AS (UPDATE trans_global SET update_time = update_time"
    " WHERE gid = ? AND status = ? RETURNING id),"
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


def add_branches_statement(gid: str, now: float, branches: Sequence[Branch],
                           expect_status: Status) -> tuple[str, list[Any]]:
    """ADD_BRANCHES with its arguments."""
    return ADD_BRANCHES, [gid, expect_status.value, *_branch_arrays(gid, branches, now)]


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
    ) -> None:
        backend = PostgresBackend(
            host=host, port=port, user=user, password=password, db=db, schema=schema,
            pool_size=pool_size, ssl=ssl,
        )
        super().__init__(backend, create=create)

    async def _matched(self, sql: str, args: Sequence[Any]) -> bool:
        async with self._session() as ex:
            return bool((await ex.fetch(sql, args))[0][0])

    async def _create_with_branches(self, trans: Transaction, branches: Sequence[Branch]
                                    ) -> bool:
        return await self._matched(CREATE, [
            *trans_params(trans, self._d), *_branch_arrays(trans.gid, branches, None)
        ])

    async def _update_with_branches(self, cas: tuple[str, list[Any]], gid: str, now: float,
                                    branches: Sequence[BranchUpdate]) -> bool:
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
                            expect_status: Status) -> bool:
        return await self._matched(*add_branches_statement(gid, now, branches, expect_status))

    async def claim_due(
        self, *, now: float, lease: float, owner: str, limit: int
    ) -> list[Transaction]:
        """See `dtmx.stores.base.Store.claim_due`. One statement, atomic; SKIP LOCKED keeps
        concurrent claimers apart."""
        async with self._session() as ex:
            rows = await ex.fetch(*self._claim_statement(now, lease, owner, limit))
        return self._claimed(rows)
