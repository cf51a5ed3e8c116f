"""The thin connection layer under the SQL stores: one Backend per driver.

A Backend hands out an `Executor` either in autocommit mode (`session`) or inside one
transaction (`transaction`). Executors translate every driver exception into a
`dtmx.errors.StoreError` (or `StoreUnavailable`, or `UniqueViolation` for a duplicate
key, which the store turns into False or DuplicateBranch), so nothing above sees a driver
exception.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    suppress,
)
from typing import Any, Generic, TypeVar

from dtmx.errors import StoreError, StoreUnavailable
from dtmx.stores.sql.dialect import Dialect

Row = Sequence[Any]
TxT = TypeVar("TxT", bound="Tx")


#: One statement of a script: SQL with `?` placeholders, and its parameters.
Statement = tuple[str, Sequence[Any]]


class UniqueViolation(StoreError):
    """A row with that unique key already exists. In a script, `statement` is the index
    of the statement that hit it."""

    statement: int | None = None


class Executor(abc.ABC):
    """Runs statements written with `?` placeholders on one connection."""

    @abc.abstractmethod
    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """All rows of a query (or of a statement with RETURNING)."""

    @abc.abstractmethod
    async def execute(self, sql: str, args: Sequence[Any] | None = ()) -> int:
        """Run one statement; the number of rows it matched. `args=None` runs `sql` as is
        (DDL, no placeholder translation)."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row (a bulk insert where the driver can)."""


class Tx(Executor):
    """An executor inside a transaction; `rollback_only` makes the end roll back."""

    rollback: bool = False

    def rollback_only(self) -> None:
        """End this transaction with a rollback instead of a commit."""
        self.rollback = True


class Backend(abc.ABC):
    """A pool (or the one SQLite connection) of one database."""

    dialect: Dialect

    @abc.abstractmethod
    async def open(self, *, create: bool) -> None:
        """Connect; with `create`, also create the database / schema if missing.
        Raises StoreUnavailable if the server cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection."""

    @abc.abstractmethod
    def session(self) -> AbstractAsyncContextManager[Executor]:
        """A connection in autocommit mode: each statement is its own transaction."""

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """One transaction: committed at the end, rolled back on an exception or when
        `rollback_only()` was called."""


class PooledBackend(Backend):
    """A Backend over a driver's connection pool: hands out connections, drops one that
    broke (StoreUnavailable) instead of reusing it."""

    #: the database's name in messages
    name: str
    _pool: Any = None

    @abc.abstractmethod
    def _executor(self, conn: Any) -> Tx:
        """The executor of one pooled connection."""

    @abc.abstractmethod
    def _translated(self) -> AbstractContextManager[None]:
        """The driver's errors as ours."""

    @abc.abstractmethod
    async def _drop(self, conn: Any) -> None:
        """Close a broken connection for good (never raises)."""

    @abc.abstractmethod
    async def _release(self, conn: Any) -> None:
        """Give a connection back to the pool (never raises)."""

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise StoreUnavailable(f"{self.name} store is not open")
        with self._translated():
            conn = await self._pool.acquire()
        try:
            yield conn
        except StoreUnavailable:
            await self._drop(conn)
            raise
        finally:
            await self._release(conn)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Executor]:
        """Statements on one pooled connection outside an explicit transaction."""
        async with self._acquire() as conn:
            yield self._executor(conn)


class transaction_scope(Generic[TxT]):
    """`async with transaction_scope(tx, ...) as tx`: begin, hand out `tx`, then commit; roll
    back instead when the body raised or called `tx.rollback_only()`. Driver errors go
    through the backend's `translated`. A class, not a generator: it is on every write."""

    __slots__ = ("_begin", "_commit", "_rollback", "_translated", "_tx")

    def __init__(
        self,
        tx: TxT,
        *,
        begin: Callable[[], Awaitable[Any]],
        commit: Callable[[], Awaitable[Any]],
        rollback: Callable[[], Awaitable[Any]],
        translated: Callable[[], AbstractContextManager[None]],
    ) -> None:
        self._tx, self._begin, self._commit, self._rollback = tx, begin, commit, rollback
        self._translated = translated

    async def __aenter__(self) -> TxT:
        with self._translated():
            await self._begin()
        return self._tx

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            # the original error matters more than a failed rollback
            with suppress(StoreError), self._translated():
                await self._rollback()
            return
        with self._translated():
            await (self._rollback() if self._tx.rollback else self._commit())
