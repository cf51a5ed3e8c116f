"""What the barrier needs from a connection: a transaction, an insert-ignore and a read.

The barrier algorithm only needs these three things, so each driver gets a thin subclass of
`AsyncAdapter` or `SyncAdapter` (in `_drivers`) that speaks its dialect and parameter
style, and the algorithm stays driver-free. An application may pass its own subclass.

Driver errors are not translated: the application owns the connection and already handles its
driver's errors, and the business callable's own errors pass through untouched, so wrapping
only ours would leave the caller with two kinds of error for one failure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ClassVar

from dtmx.client.barrier._algo import BarrierRow
from dtmx.client.barrier._sql import (
    INSERT_COLUMNS,
    KEY_COLUMNS,
    Dialect,
    ParamStyle,
    insert_ignore_sql,
    select_reason_sql,
)

Params = tuple[Any, ...] | dict[str, Any]

#: The savepoint a barrier opens inside a transaction the caller already began.
SAVEPOINT = "dtmx_barrier"


class _Statements:
    """The two statements of one adapter, built once from its dialect, style and table."""

    _DIALECT: ClassVar[Dialect]
    style: ClassVar[ParamStyle]

    def __init__(self, conn: Any, table: str) -> None:
        self.conn = conn
        self.table = table
        self.dialect = self._dialect()
        self.insert = insert_ignore_sql(self.dialect, self.style, table)
        self.select = select_reason_sql(self.style, table)

    def _dialect(self) -> Dialect:
        return self._DIALECT

    def params(self, names: tuple[str, ...], values: tuple[str, ...]) -> Params:
        """Values bound the way this driver wants them."""
        if self.style is ParamStyle.NAMED:
            return dict(zip(names, values, strict=True))
        return values


class AsyncAdapter(_Statements, ABC):
    """What the barrier needs from an async connection; subclass it for another driver."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A local transaction: committed if the block ends normally, else rolled back."""
        await self._begin()
        try:
            yield
        except BaseException:
            await self._rollback()
            raise
        await self._commit()

    async def _begin(self) -> None:
        raise NotImplementedError

    async def _commit(self) -> None:
        raise NotImplementedError

    async def _rollback(self) -> None:
        raise NotImplementedError

    @abstractmethod
    async def _execute(self, sql: str, params: Params | None) -> int:
        """Run one statement; return the rows it changed."""

    @abstractmethod
    async def _fetch_value(self, sql: str, params: Params) -> Any:
        """The first column of the first row, or None."""

    async def insert_ignore(self, row: BarrierRow) -> int:
        """Insert `row` unless its key exists; return 1 if inserted, 0 if it existed."""
        return await self._execute(self.insert, self.params(INSERT_COLUMNS, row.values()))

    async def fetch_reason(self, row: BarrierRow) -> str | None:
        """The reason stored in the row with `row`'s key, or None if there is none."""
        value = await self._fetch_value(self.select, self.params(KEY_COLUMNS, row.key()))
        return None if value is None else str(value)

    async def execute(self, sql: str) -> None:
        """Run a statement without parameters (DDL)."""
        await self._execute(sql, None)


class SyncAdapter(_Statements, ABC):
    """What the barrier needs from a blocking connection; twin of `AsyncAdapter`."""

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A local transaction: committed if the block ends normally, else rolled back."""
        self._begin()
        try:
            yield
        except BaseException:
            self._rollback()
            raise
        self._commit()

    def _begin(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    @abstractmethod
    def _execute(self, sql: str, params: Params | None) -> int:
        """Run one statement; return the rows it changed."""

    @abstractmethod
    def _fetch_value(self, sql: str, params: Params) -> Any:
        """The first column of the first row, or None."""

    def insert_ignore(self, row: BarrierRow) -> int:
        """Insert `row` unless its key exists; return 1 if inserted, 0 if it existed."""
        return self._execute(self.insert, self.params(INSERT_COLUMNS, row.values()))

    def fetch_reason(self, row: BarrierRow) -> str | None:
        """The reason stored in the row with `row`'s key, or None if there is none."""
        value = self._fetch_value(self.select, self.params(KEY_COLUMNS, row.key()))
        return None if value is None else str(value)

    def execute(self, sql: str) -> None:
        """Run a statement without parameters (DDL)."""
        self._execute(sql, None)
