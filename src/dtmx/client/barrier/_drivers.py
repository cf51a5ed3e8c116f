"""One small adapter per database driver, and picking the adapter of a connection.

No driver is imported here: an adapter is chosen by matching the connection against the
classes of driver modules that are already loaded (a connection's driver always is), and the
one SQLAlchemy helper it needs is imported when first used.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from dtmx.client.barrier._adapters import SAVEPOINT, AsyncAdapter, Params, SyncAdapter
from dtmx.client.barrier._sql import Dialect, ParamStyle


def _sqlite_tx(in_transaction: bool) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(begin, commit, rollback) statements for SQLite.

    IMMEDIATE takes the write lock at once, so two concurrent barriers queue on the busy
    timeout instead of one failing on lock upgrade. Inside a transaction the caller already
    opened, the barrier's work becomes a savepoint and the caller commits.
    """
    if in_transaction:
        return (
            f"SAVEPOINT {SAVEPOINT}",
            (f"RELEASE SAVEPOINT {SAVEPOINT}",),
            (f"ROLLBACK TO SAVEPOINT {SAVEPOINT}", f"RELEASE SAVEPOINT {SAVEPOINT}"),
        )
    return ("BEGIN IMMEDIATE", ("COMMIT",), ("ROLLBACK",))


class AioSqliteAdapter(AsyncAdapter):
    """aiosqlite connection."""

    _DIALECT = Dialect.SQLITE
    style = ParamStyle.QMARK
    _ends: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    async def _begin(self) -> None:
        begin, *ends = _sqlite_tx(self.conn.in_transaction)
        self._ends = (ends[0], ends[1])
        await self.conn.execute(begin)

    async def _commit(self) -> None:
        for sql in self._ends[0]:
            await self.conn.execute(sql)

    async def _rollback(self) -> None:
        for sql in self._ends[1]:
            await self.conn.execute(sql)

    async def _execute(self, sql: str, params: Params | None) -> int:
        async with self.conn.execute(sql, params or ()) as cur:
            return int(cur.rowcount)

    async def _fetch_value(self, sql: str, params: Params) -> Any:
        async with self.conn.execute(sql, params) as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]


class Sqlite3Adapter(SyncAdapter):
    """Standard library sqlite3 connection."""

    _DIALECT = Dialect.SQLITE
    style = ParamStyle.QMARK
    _ends: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    def _begin(self) -> None:
        begin, *ends = _sqlite_tx(self.conn.in_transaction)
        self._ends = (ends[0], ends[1])
        self.conn.execute(begin)

    def _commit(self) -> None:
        for sql in self._ends[0]:
            self.conn.execute(sql)

    def _rollback(self) -> None:
        for sql in self._ends[1]:
            self.conn.execute(sql)

    def _execute(self, sql: str, params: Params | None) -> int:
        return int(self.conn.execute(sql, params or ()).rowcount)

    def _fetch_value(self, sql: str, params: Params) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]


class AsyncmyAdapter(AsyncAdapter):
    """asyncmy connection (MySQL, MariaDB). BEGIN ends any transaction the caller left open."""

    _DIALECT = Dialect.MYSQL
    style = ParamStyle.FORMAT

    async def _begin(self) -> None:
        await self.conn.begin()

    async def _commit(self) -> None:
        await self.conn.commit()

    async def _rollback(self) -> None:
        await self.conn.rollback()

    async def _execute(self, sql: str, params: Params | None) -> int:
        async with self.conn.cursor() as cur:
            return int(await cur.execute(sql, params))

    async def _fetch_value(self, sql: str, params: Params) -> Any:
        async with self.conn.cursor() as cur:
            await cur.execute(sql, params)
            row = await cur.fetchone()
        return None if row is None else row[0]


class PyMySQLAdapter(SyncAdapter):
    """PyMySQL connection (MySQL, MariaDB). BEGIN ends any transaction the caller left open."""

    _DIALECT = Dialect.MYSQL
    style = ParamStyle.FORMAT

    def _begin(self) -> None:
        self.conn.begin()

    def _commit(self) -> None:
        self.conn.commit()

    def _rollback(self) -> None:
        self.conn.rollback()

    def _execute(self, sql: str, params: Params | None) -> int:
        with self.conn.cursor() as cur:
            return int(cur.execute(sql, params))

    def _fetch_value(self, sql: str, params: Params) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        return None if row is None else row[0]


class AsyncpgAdapter(AsyncAdapter):
    """asyncpg connection or pool connection; nested in an open transaction as a savepoint."""

    _DIALECT = Dialect.POSTGRES
    style = ParamStyle.NUMERIC

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A transaction on the connection (a savepoint inside an open one)."""
        async with self.conn.transaction():
            yield

    async def _execute(self, sql: str, params: Params | None) -> int:
        status = await self.conn.execute(sql, *(params or ()))
        # asyncpg answers with the command tag, e.g. "INSERT 0 1".
        last = str(status).rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def _fetch_value(self, sql: str, params: Params) -> Any:
        return await self.conn.fetchval(sql, *params)


class PsycopgAsyncAdapter(AsyncAdapter):
    """psycopg 3 AsyncConnection; nested in an open transaction as a savepoint."""

    _DIALECT = Dialect.POSTGRES
    style = ParamStyle.FORMAT

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A transaction on the connection (a savepoint inside an open one)."""
        async with self.conn.transaction():
            yield

    async def _execute(self, sql: str, params: Params | None) -> int:
        cur = await self.conn.execute(sql, params)
        return max(int(cur.rowcount), 0)

    async def _fetch_value(self, sql: str, params: Params) -> Any:
        cur = await self.conn.execute(sql, params)
        row = await cur.fetchone()
        return None if row is None else row[0]


class PsycopgAdapter(SyncAdapter):
    """psycopg 3 Connection; nested in an open transaction as a savepoint."""

    _DIALECT = Dialect.POSTGRES
    style = ParamStyle.FORMAT

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction on the connection (a savepoint inside an open one)."""
        with self.conn.transaction():
            yield

    def _execute(self, sql: str, params: Params | None) -> int:
        return max(int(self.conn.execute(sql, params).rowcount), 0)

    def _fetch_value(self, sql: str, params: Params) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]


def _sqlalchemy_dialect(conn: Any) -> Dialect:
    name = conn.dialect.name
    if name in ("mysql", "mariadb"):
        return Dialect.MYSQL
    if name == "postgresql":
        return Dialect.POSTGRES
    if name == "sqlite":
        return Dialect.SQLITE
    raise TypeError(f"the barrier does not support SQLAlchemy dialect {name!r}")


def _text(sql: str) -> Any:
    from sqlalchemy import text

    return text(sql)


class SQLAlchemyAsyncAdapter(AsyncAdapter):
    """SQLAlchemy AsyncConnection; inside an already begun transaction, a savepoint."""

    style = ParamStyle.NAMED

    def _dialect(self) -> Dialect:
        return _sqlalchemy_dialect(self.conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A transaction, or a nested one (savepoint) when the connection is already in one."""
        tx = self.conn.begin_nested() if self.conn.in_transaction() else self.conn.begin()
        async with tx:
            yield

    async def _execute(self, sql: str, params: Params | None) -> int:
        if params is None:
            await self.conn.exec_driver_sql(sql)
            return 0
        result = await self.conn.execute(_text(sql), params)
        return max(int(result.rowcount), 0)

    async def _fetch_value(self, sql: str, params: Params) -> Any:
        return (await self.conn.execute(_text(sql), params)).scalar()


class SQLAlchemyAdapter(SyncAdapter):
    """SQLAlchemy Connection; inside an already begun transaction, a savepoint."""

    style = ParamStyle.NAMED

    def _dialect(self) -> Dialect:
        return _sqlalchemy_dialect(self.conn)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction, or a nested one (savepoint) when the connection is already in one."""
        tx = self.conn.begin_nested() if self.conn.in_transaction() else self.conn.begin()
        with tx:
            yield

    def _execute(self, sql: str, params: Params | None) -> int:
        if params is None:
            self.conn.exec_driver_sql(sql)
            return 0
        return max(int(self.conn.execute(_text(sql), params).rowcount), 0)

    def _fetch_value(self, sql: str, params: Params) -> Any:
        return self.conn.execute(_text(sql), params).scalar()


# (module, class name, adapter): a connection is matched against a class only if its module
# is loaded, which it must be for such a connection to exist; nothing is imported.
_KNOWN: tuple[tuple[str, str, type[AsyncAdapter] | type[SyncAdapter]], ...] = (
    ("aiosqlite", "Connection", AioSqliteAdapter),
    ("sqlite3", "Connection", Sqlite3Adapter),
    ("asyncmy", "Connection", AsyncmyAdapter),
    ("pymysql.connections", "Connection", PyMySQLAdapter),
    ("asyncpg", "Connection", AsyncpgAdapter),
    ("asyncpg.pool", "PoolConnectionProxy", AsyncpgAdapter),
    ("psycopg", "AsyncConnection", PsycopgAsyncAdapter),
    ("psycopg", "Connection", PsycopgAdapter),
    ("sqlalchemy.ext.asyncio", "AsyncConnection", SQLAlchemyAsyncAdapter),
    ("sqlalchemy.engine", "Connection", SQLAlchemyAdapter),
)


def _adapter_class(conn: Any) -> type[AsyncAdapter] | type[SyncAdapter]:
    for module_name, class_name, adapter in _KNOWN:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(conn, cls):
            return adapter
    raise TypeError(
        f"the barrier does not know connections of type {type(conn).__qualname__}: pass an "
        "aiosqlite, sqlite3, asyncmy, pymysql, asyncpg, psycopg or SQLAlchemy connection, "
        "or an AsyncAdapter/SyncAdapter subclass instance"
    )


def async_adapter(conn: Any, table: str) -> AsyncAdapter:
    """The async adapter for `conn` (or `conn` itself if it already is one)."""
    if isinstance(conn, AsyncAdapter):
        return conn
    cls = type(conn) if isinstance(conn, SyncAdapter) else _adapter_class(conn)
    if not issubclass(cls, AsyncAdapter):
        raise TypeError(
            f"{type(conn).__qualname__} is a blocking connection: use the *_sync methods"
        )
    return cls(conn, table)


def sync_adapter(conn: Any, table: str) -> SyncAdapter:
    """The blocking adapter for `conn` (or `conn` itself if it already is one)."""
    if isinstance(conn, SyncAdapter):
        return conn
    cls = type(conn) if isinstance(conn, AsyncAdapter) else _adapter_class(conn)
    if not issubclass(cls, SyncAdapter):
        raise TypeError(
            f"{type(conn).__qualname__} is an async connection: use the awaitable methods"
        )
    return cls(conn, table)
