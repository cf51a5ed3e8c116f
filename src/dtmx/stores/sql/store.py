"""SqlStore: what the three SQL stores share; each dialect's class owns its hot verbs.

The verbs whose SQL is the same everywhere (reads, scans, cron resets, expiry, key-value,
the compare-and-set UPDATE without branches) live here, written with `?` placeholders and
the Dialect's time conversion. The verbs that write several rows at once (`create` and
`update` with branches, `take`, `add_branches`, `claim_due`) cost one network round trip
each and are written per database: `SqliteStore` (plain transactions, in process),
`MysqlStore` (one multi-statement script), `PostgresStore` (single statements with
data-modifying CTEs).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from dtmx.core.models import (
    Branch,
    CallRecord,
    Change,
    Status,
    Transaction,
    TransType,
)
from dtmx.errors import DuplicateBranch
from dtmx.stores.sql import schema
from dtmx.stores.sql.calls import SELECT_CALLS, call_from_row, in_order
from dtmx.stores.sql.conn import Backend, Executor, Row, Tx, UniqueViolation
from dtmx.stores.sql.group_commit import GroupCommit
from dtmx.stores.sql.kv import SqlKv
from dtmx.stores.sql.rows import (
    INSERT_TRANS,
    SELECT_BRANCHES,
    TRANS_COLS,
    CasUpdate,
    branch_from_row,
    cas_update,
    trans_from_row,
    trans_params,
)
from dtmx.stores.sql.upkeep import IN_UNFINISHED, UNFINISHED_VALUES, SqlUpkeep

#: add_branches' room when there is no max_ops (bigint-safe).
NO_LIMIT = 2**62
#: The condition on the ops a transaction holds before add_branches; args: gid, room.
BELOW_ROOM = "(SELECT count(*) FROM trans_branch_op WHERE gid = ?) <= ?"


#: A transaction to create and its branches, as one item of a batch.
NewTrans = tuple[Transaction, Sequence[Branch]]


@dataclass(frozen=True, slots=True)
class NewBranches:
    """The arguments of one `add_branches` call, as one item of a batch (`room`: the ops
    the transaction may hold before, BELOW_ROOM)."""

    gid: str
    now: float
    branches: Sequence[Branch]
    expect_status: Status
    expect_type: TransType | None
    room: int


ItemT = TypeVar("ItemT", CasUpdate, NewBranches)


def _gid_of(u: CasUpdate | NewBranches) -> str:
    return u.gid


def _new_gid(new: NewTrans) -> str:
    return new[0].gid


def _in_gid_order(many: Callable[[Sequence[ItemT]], Awaitable[list[bool]]]
                  ) -> Callable[[Sequence[ItemT]], Awaitable[list[bool]]]:
    """`many` called with the items in gid order (rows locked in that order in every
    batch, so two batches in flight cannot deadlock), answering in the callers' order."""

    async def sorted_many(items: Sequence[ItemT]) -> list[bool]:
        order = sorted(range(len(items)), key=lambda i: items[i].gid)
        got = await many([items[i] for i in order])
        out = [False] * len(items)
        for i, ok in zip(order, got, strict=True):
            out[i] = ok
        return out

    return sorted_many


class SqlStore(SqlKv, SqlUpkeep, abc.ABC):
    """The shared part of the SQL implementations of `dtmx.stores.base.Store`.

    Build a dialect's class (`SqliteStore`, `MysqlStore`, `PostgresStore`), then
    `await store.open()`. `roundtrips` counts the calls that reached the database.
    """

    def __init__(self, backend: Backend, *, create: bool = True, batch_lanes: int = 0) -> None:
        self.backend = backend
        self.roundtrips = 0
        self._create = create
        self._d = backend.dialect
        # With lanes, concurrent updates share round trips, and so do concurrent creates
        # (group commit, see there).
        self._updates: GroupCommit[CasUpdate, bool] | None = None
        self._creates: GroupCommit[NewTrans, bool] | None = None
        self._adds: GroupCommit[NewBranches, bool] | None = None
        if batch_lanes > 0:
            self._updates = GroupCommit(one=self._update_one,
                                        many=_in_gid_order(self._update_many),
                                        key=_gid_of, lanes=batch_lanes)
            self._creates = GroupCommit(one=self._create_one, many=self._create_many,
                                        key=_new_gid, lanes=batch_lanes)
            self._adds = GroupCommit(one=self._add_one, many=_in_gid_order(self._add_many),
                                     key=_gid_of, lanes=batch_lanes)

    # ---- lifecycle ----------------------------------------------------------------
    async def open(self) -> None:
        """Connect, create the schema on first start, refuse a schema behind the code."""
        await self.backend.open(create=self._create)
        try:
            await schema.check(self.backend, create=self._create)
        except BaseException:
            await self.backend.close()
            raise

    async def migrate(self) -> list[int]:
        """Bring the schema up to this code's version (`dtmx migrate`); versions applied."""
        return await schema.migrate(self.backend)

    async def schema_version(self) -> int | None:
        """The schema version recorded in the database (None: no dtmx schema yet)."""
        return await schema.schema_version(self.backend)

    async def close(self) -> None:
        """Close the connections (after the batched writes in flight); the store may be
        opened again."""
        for lane in (self._updates, self._creates, self._adds):
            if lane is not None:
                await lane.close()
        await self.backend.close()

    async def ping(self) -> None:
        """One trivial query; raises StoreUnavailable if the database cannot answer."""
        async with self._session() as ex:
            await ex.fetch("SELECT 1")

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Executor]:
        self.roundtrips += 1
        async with self.backend.session() as ex:
            yield ex

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Tx]:
        self.roundtrips += 1
        async with self.backend.transaction() as tx:
            yield tx

    # ---- the verbs each dialect writes its own way --------------------------------
    @abc.abstractmethod
    async def _create_with_branches(self, trans: Transaction, branches: Sequence[Branch]
                                    ) -> bool:
        """Insert the global row and its branches atomically; False if the gid exists.
        A duplicate among the branches raises UniqueViolation."""

    @abc.abstractmethod
    async def _update_with_rows(self, cas: tuple[str, list[Any]], gid: str, now: float,
                                change: Change) -> bool:
        """Run the compare-and-set UPDATE `cas` and, only if it matched, the branch
        updates and the calls of `change` (see `Store.update`); whether it matched."""

    @abc.abstractmethod
    async def _take(self, cas: tuple[str, list[Any]], gid: str
                    ) -> tuple[list[Row], list[Row]] | None:
        """Run the compare-and-set UPDATE `cas` and read back the row (TRANS_COLS) and
        its branches (BRANCH_COLS, in id order) if it matched; None if it did not."""

    @abc.abstractmethod
    async def _add_branches(self, gid: str, now: float, branches: Sequence[Branch],
                            expect_status: Status, expect_type: TransType | None,
                            room: int) -> bool:
        """Insert branches if the global row has `expect_status` (and `expect_type`, if
        given) and at most `room` branch ops (BELOW_ROOM), which cannot change meanwhile.
        A duplicate raises UniqueViolation."""

    @abc.abstractmethod
    async def claim_due(
        self, *, now: float, lease: float, owner: str, limit: int
    ) -> list[Transaction]:
        """See `dtmx.stores.base.Store.claim_due`."""

    # ---- transactions -------------------------------------------------------------
    async def create(self, *, trans: Transaction, branches: Sequence[Branch]) -> bool:
        """See `dtmx.stores.base.Store.create`."""
        try:
            if self._creates is not None:
                return await self._creates.submit((trans, branches))
            if branches:
                return await self._create_with_branches(trans, branches)
            async with self._session() as ex:
                await ex.execute(INSERT_TRANS, trans_params(trans, self._d))
            return True
        except UniqueViolation as e:
            # With branches, a gid conflict never gets here (the dialects answer False):
            # the duplicate is among the branches themselves.
            if branches:
                raise DuplicateBranch(gid=trans.gid) from e
            return False

    async def _create_one(self, new: NewTrans) -> bool:
        return await self._create_with_branches(*new)

    async def _create_many(self, items: Sequence[NewTrans]) -> list[bool]:
        """Several creates with branches (distinct gids) in one round trip, each False
        if its gid exists; a duplicate among one's branches may fail them all (UniqueViolation:
        each is then redone alone). Only the dialects built with batch lanes are asked."""
        raise NotImplementedError

    async def get(self, *, gid: str) -> Transaction | None:
        """See `dtmx.stores.base.Store.get`."""
        async with self._session() as ex:
            rows = await ex.fetch(f"SELECT {TRANS_COLS} FROM trans_global WHERE gid = ?", [gid])
        return trans_from_row(rows[0], self._d) if rows else None

    async def get_branches(self, *, gid: str) -> list[Branch]:
        """See `dtmx.stores.base.Store.get_branches`."""
        async with self._session() as ex:
            rows = await ex.fetch(SELECT_BRANCHES, [gid])
        return [branch_from_row(r, self._d) for r in rows]

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
        """See `dtmx.stores.base.Store.update`; batched with concurrent ones when the
        store has batch lanes."""
        u = CasUpdate(gid, now, expect_status, expect_owner, change, expect_type)
        if self._updates is not None:
            return await self._updates.submit(u)
        return await self._update_one(u)

    async def _update_one(self, u: CasUpdate) -> bool:
        cas = cas_update(self._d, u.gid, u.now, u.expect_status, u.expect_owner, u.change,
                         u.expect_type)
        if u.change.branches or u.change.calls:
            return await self._update_with_rows(cas, u.gid, u.now, u.change)
        async with self._session() as ex:
            return await ex.execute(*cas) > 0

    async def _update_many(self, items: Sequence[CasUpdate]) -> list[bool]:
        """Several compare-and-set updates (distinct gids) in one round trip, each with
        its own outcome. Only the dialects built with batch lanes are asked."""
        raise NotImplementedError

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
        cas = cas_update(self._d, gid, now, expect_status, None, change, expect_type)
        got = await self._take(cas, gid)
        if got is None:
            return None
        trows, brows = got
        d = self._d
        return trans_from_row(trows[0], d), [branch_from_row(r, d) for r in brows]

    async def get_calls(self, *, gid: str) -> list[CallRecord]:
        """See `dtmx.stores.base.Store.get_calls`."""
        async with self._session() as ex:
            rows = await ex.fetch(SELECT_CALLS, [gid, gid])
        return in_order([call_from_row(r, self._d) for r in rows])

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
        # the condition as "ops stored now <= room": the same SQL whatever is given
        room = NO_LIMIT if max_ops is None else max_ops - len(branches)
        new = NewBranches(gid, now, branches, expect_status, expect_type, room)
        try:
            if self._adds is not None:
                return await self._adds.submit(new)
            return await self._add_one(new)
        except UniqueViolation as e:
            raise DuplicateBranch(gid=gid) from e

    async def _add_one(self, a: NewBranches) -> bool:
        return await self._add_branches(a.gid, a.now, a.branches, a.expect_status,
                                        a.expect_type, a.room)

    async def _add_many(self, items: Sequence[NewBranches]) -> list[bool]:
        """Several add_branches (distinct gids) in one round trip, each with its own
        outcome; a duplicate branch fails them all (UniqueViolation: each is then redone
        alone). Only the dialects built with batch lanes are asked."""
        raise NotImplementedError

    def _claim_pick(self, now: float, limit: int) -> tuple[str, list[Any]]:
        """The SELECT of the ids `claim_due` claims (locking them where it can)."""
        return (
            f"SELECT id FROM trans_global WHERE {IN_UNFINISHED} AND next_cron_time <= ?"
            f" ORDER BY next_cron_time LIMIT ?{self._d.skip_locked}",
            [*UNFINISHED_VALUES, self._d.ts(now), limit],
        )

    def _claim_statement(self, now: float, lease: float, owner: str, limit: int
                         ) -> tuple[str, list[Any]]:
        """One statement claiming the due rows (SQLite, PostgreSQL; MySQL cannot UPDATE a
        table it selects from with LIMIT). The pick is a MATERIALIZED CTE: as a plain IN
        (subquery) PostgreSQL may run the LIMITed, SKIP LOCKED subquery more than once and
        claim more than `limit`."""
        pick, args = self._claim_pick(now, limit)
        return (
            f"WITH picked AS MATERIALIZED ({pick})"
            " UPDATE trans_global SET owner = ?, next_cron_time = ?"
            f" WHERE id IN (SELECT id FROM picked) RETURNING {TRANS_COLS}",
            [*args, owner, self._d.ts(now + lease)],
        )

    def _claimed(self, rows: Sequence[Row]) -> list[Transaction]:
        """Claimed rows (TRANS_COLS) as transactions, the most overdue first."""
        return sorted(
            (trans_from_row(r, self._d) for r in rows),
            key=lambda t: (t.next_cron_time or 0.0, t.gid),
        )

    async def reset_next_cron_time(self, *, gid: str, now: float) -> bool:
        """See `dtmx.stores.base.Store.reset_next_cron_time`."""
        async with self._session() as ex:
            n = await ex.execute(
                f"UPDATE trans_global SET next_cron_time = ? WHERE gid = ? AND {IN_UNFINISHED}",
                [self._d.ts(now), gid, *UNFINISHED_VALUES],
            )
        return n > 0
