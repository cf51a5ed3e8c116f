"""`BranchBarrier`: the sub-transaction barrier a branch handler wraps its business in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dtmx.client._consts import Op
from dtmx.client._errors import DtmError, Failure, InvalidBranchInfo
from dtmx.client.barrier import _redis
from dtmx.client.barrier._algo import (
    MSG_BARRIER_ID,
    MSG_BRANCH_ID,
    Attempt,
    Decision,
    msg_rollback_row,
    plan_call,
)
from dtmx.client.barrier._drivers import async_adapter, sync_adapter
from dtmx.client.barrier._sql import DEFAULT_TABLE, ddl, split_table

AsyncBusiness = Callable[[Any], Awaitable[object]]
SyncBusiness = Callable[[Any], object]

_QUERY_KEYS = ("trans_type", "gid", "branch_id", "op")
_MSG_ROLLBACK = Op.ROLLBACK.value


class Duplicated(DtmError):
    """DUPLICATED: this msg's local transaction was already done, or query_prepared ran first."""


def _proceed(decision: Decision) -> bool:
    """Whether to run the business; a duplicated msg raises (so its transaction rolls back)."""
    if decision is Decision.DUPLICATED:
        raise Duplicated()
    return decision is Decision.RUN


def _first(value: Any) -> str:
    # Multi-valued query mappings (parse_qs, MultiDict.getall) give lists: take the first.
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    return "" if value is None else str(value)


@dataclass
class BranchBarrier:
    """The barrier of one branch call: makes the business idempotent and safe against null
    compensation and hanging requests, inside the business's own local transaction.

    `barrier_id` counts the barrier calls made through this object ("01", "02", ...), so a
    handler that guards several local transactions in one branch call keeps them apart.
    `table` is the barrier table's name, `schema.name` or `name`.
    """

    trans_type: str
    gid: str
    branch_id: str
    op: str
    table: str = field(default=DEFAULT_TABLE, kw_only=True)
    barrier_id: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        missing = [k for k in _QUERY_KEYS if not getattr(self, k)]
        if missing:
            raise InvalidBranchInfo(f"invalid branch info: missing {', '.join(missing)}")
        split_table(self.table)

    @classmethod
    def from_query(cls, query: Mapping[str, Any], *, table: str = DEFAULT_TABLE) -> BranchBarrier:
        """Build the barrier from a branch request's query parameters.

        Raises `InvalidBranchInfo` (a ValueError) naming any of gid, trans_type, branch_id
        and op that is missing or empty.
        """
        values = {k: _first(query.get(k)) for k in _QUERY_KEYS}
        return cls(**values, table=table)

    def _next_barrier_id(self) -> str:
        self.barrier_id += 1
        return f"{self.barrier_id:02d}"

    def _next_attempt(self) -> Attempt:
        bid = self._next_barrier_id()
        return plan_call(self.trans_type, self.gid, self.branch_id, self.op, bid)

    async def call(self, conn: Any, busi: AsyncBusiness) -> None:
        """Run `await busi(conn)` at most once for this branch op, in one local transaction.

        The barrier rows and the business commit together; if `busi` raises, both roll back
        and the exception propagates, so a retry runs the business again. A null
        compensation, a repeated request and a hanging request commit without the business.
        For op "msg" a repeat raises `Duplicated`. If `conn` already has a transaction open,
        PostgreSQL, SQLAlchemy and SQLite nest the work in a savepoint (the caller commits);
        MySQL's BEGIN would end that transaction, so give MySQL an idle connection.
        """
        adapter = async_adapter(conn, self.table)
        attempt = self._next_attempt()
        async with adapter.transaction():
            added = [await adapter.insert_ignore(row) for row in attempt.rows]
            if _proceed(attempt.decide(added)):
                await busi(adapter.conn)

    def call_sync(self, conn: Any, busi: SyncBusiness) -> None:
        """Blocking twin of `call`, for sqlite3, PyMySQL, psycopg and SQLAlchemy connections."""
        adapter = sync_adapter(conn, self.table)
        attempt = self._next_attempt()
        with adapter.transaction():
            added = [adapter.insert_ignore(row) for row in attempt.rows]
            if _proceed(attempt.decide(added)):
                busi(adapter.conn)

    async def query_prepared(self, conn: Any) -> None:
        """Answer a msg's query_prepared: raise `Failure` unless its local transaction committed.

        Inserting the "rollback" row first means a local transaction still in flight either
        commits before this (and is seen) or can never commit after it (it gets `Duplicated`).
        """
        adapter = async_adapter(conn, self.table)
        row = msg_rollback_row(self.trans_type, self.gid)
        async with adapter.transaction():
            await adapter.insert_ignore(row)
            reason = await adapter.fetch_reason(row)
        _check_prepared(reason)

    def query_prepared_sync(self, conn: Any) -> None:
        """Blocking twin of `query_prepared`."""
        adapter = sync_adapter(conn, self.table)
        row = msg_rollback_row(self.trans_type, self.gid)
        with adapter.transaction():
            adapter.insert_ignore(row)
            reason = adapter.fetch_reason(row)
        _check_prepared(reason)

    async def redis_check_adjust_amount(
        self, redis: Any, key: str, amount: int, barrier_expire: int
    ) -> None:
        """Add `amount` to the integer at `key` at most once for this branch op (redis.asyncio).

        Raises `Failure` if `key` is missing or the result would go below zero. Null
        compensation, repeated and hanging requests are skipped; for op "msg" a repeat
        raises `Duplicated`. Barrier keys expire after `barrier_expire` seconds.
        """
        outcome = await _redis.check_adjust_amount(
            redis,
            gid=self.gid,
            branch_id=self.branch_id,
            op=self.op,
            barrier_id=self._next_barrier_id(),
            key=key,
            amount=amount,
            barrier_expire=barrier_expire,
        )
        if outcome is _redis.RedisOutcome.FAILURE:
            raise Failure(f"{key}: amount missing or insufficient")
        if outcome is _redis.RedisOutcome.DUPLICATE and self.op == Op.MSG:
            raise Duplicated()

    async def redis_query_prepared(self, redis: Any, barrier_expire: int) -> None:
        """Redis twin of `query_prepared`: raise `Failure` unless the msg's op already ran."""
        reason = await _redis.query_prepared(
            redis,
            gid=self.gid,
            branch_id=MSG_BRANCH_ID,
            op=Op.MSG.value,
            barrier_id=MSG_BARRIER_ID,
            barrier_expire=barrier_expire,
        )
        _check_prepared(reason)


def _check_prepared(reason: str | None) -> None:
    if reason == _MSG_ROLLBACK:
        raise Failure("msg rollback")


async def ensure_table(conn: Any, table: str = DEFAULT_TABLE) -> None:
    """Create the barrier table (and its schema or database) on `conn` if missing."""
    adapter = async_adapter(conn, table)
    async with adapter.transaction():
        for sql in ddl(adapter.dialect, table):
            await adapter.execute(sql)


def ensure_table_sync(conn: Any, table: str = DEFAULT_TABLE) -> None:
    """Blocking twin of `ensure_table`."""
    adapter = sync_adapter(conn, table)
    with adapter.transaction():
        for sql in ddl(adapter.dialect, table):
            adapter.execute(sql)

