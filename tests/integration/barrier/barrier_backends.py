"""One harness per (driver, sync or async) the barrier supports, against the real databases.

A harness opens a connection the way an application would, runs a business callable that
writes one row to a test business table through that connection, and reads the barrier and
business tables back through a separate autocommit checker connection of the same dialect.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from dtmx.client.barrier import BranchBarrier, ensure_table, ensure_table_sync
from dtmx.client.barrier._sql import DEFAULT_TABLE, Dialect, ParamStyle

MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
BUSI_TABLE = {
    Dialect.MYSQL: "dtm_barrier.barrier_test_busi",
    Dialect.POSTGRES: "dtm_barrier.barrier_test_busi",
    Dialect.SQLITE: "barrier_test_busi",
}


class Boom(Exception):
    """The business failing on purpose."""


def new_gid() -> str:
    return f"bt-{uuid.uuid4().hex}"


@dataclass
class Harness:
    """How to reach one backend; `exec` is a coroutine function unless `sync`."""

    name: str
    dialect: Dialect
    sync: bool
    style: ParamStyle
    open: Callable[[], Awaitable[Any]]
    close: Callable[[Any], Awaitable[None]]
    exec: Callable[[Any, str, Any], Any]
    table: str = DEFAULT_TABLE
    sqlite_main: Path | None = None
    sqlite_attached: Path | None = None  # attached as dtm_barrier
    _ready: bool = field(default=False, repr=False)

    # -- setup and checking -------------------------------------------------------------

    def _check(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run SQL (pyformat %s, or ? for SQLite) on a fresh autocommit checker connection."""
        if self.dialect is Dialect.MYSQL:
            with pymysql.connect(**MYSQL, autocommit=True) as conn, conn.cursor() as cur:
                cur.execute(sql, params or None)
                return list(cur.fetchall())
        if self.dialect is Dialect.POSTGRES:
            with psycopg.connect(PG_DSN, autocommit=True) as pg:
                cur = pg.execute(sql, params or None)
                return list(cur.fetchall()) if cur.description else []
        assert self.sqlite_main is not None
        lite = sqlite3.connect(self.sqlite_main, isolation_level=None, timeout=10)
        try:
            if self.sqlite_attached is not None:
                lite.execute("ATTACH DATABASE ? AS dtm_barrier", (str(self.sqlite_attached),))
            return list(lite.execute(sql.replace("%s", "?"), params).fetchall())
        finally:
            lite.close()

    async def ready(self) -> None:
        """Create the barrier table through the harness's driver, and the business table."""
        if self._ready:
            return
        if self.dialect is Dialect.POSTGRES:
            # CREATE SCHEMA IF NOT EXISTS races with itself across sessions; tolerate that.
            with contextlib.suppress(psycopg.errors.UniqueViolation):
                self._check("CREATE SCHEMA IF NOT EXISTS dtm_barrier")
        conn = await self.open()
        try:
            if self.sync:
                await asyncio.to_thread(ensure_table_sync, conn, self.table)
            else:
                await ensure_table(conn, self.table)
        finally:
            await self.close(conn)
        self._check(
            f"CREATE TABLE IF NOT EXISTS {BUSI_TABLE[self.dialect]}"
            "(gid varchar(128), branch_id varchar(128), op varchar(45))"
        )
        self._ready = True

    def barrier_rows(self, gid: str) -> set[tuple[str, str, str, str]]:
        rows = self._check(
            f"SELECT branch_id, op, barrier_id, reason FROM {self.table} WHERE gid = %s", (gid,)
        )
        return {(r[0], r[1], r[2], r[3]) for r in rows}

    def busi_ops(self, gid: str) -> list[str]:
        """The ops whose business ran (and committed) for `gid`, sorted."""
        rows = self._check(f"SELECT op FROM {BUSI_TABLE[self.dialect]} WHERE gid = %s", (gid,))
        return sorted(r[0] for r in rows)

    # -- running the barrier ------------------------------------------------------------

    def _busi_insert(self, bb: BranchBarrier) -> tuple[str, Any]:
        names = ("gid", "branch_id", "op")
        marks = ", ".join(self.style.marks(names))
        sql = f"INSERT INTO {BUSI_TABLE[self.dialect]}(gid, branch_id, op) VALUES ({marks})"
        values = (bb.gid, bb.branch_id, bb.op)
        params = dict(zip(names, values, strict=True)) if self.style is ParamStyle.NAMED else values
        return sql, params

    async def call(
        self,
        bb: BranchBarrier,
        conn: Any,
        *,
        fail: bool = False,
        hold: tuple[threading.Event, threading.Event] | None = None,
    ) -> None:
        """`bb.call` (or `call_sync` in a thread) with a business writing one row.

        `fail` makes the business raise `Boom` after writing; `hold` = (entered, release)
        makes it signal `entered` and wait for `release` before returning.
        """
        sql, params = self._busi_insert(bb)

        def sync_busi(c: Any) -> None:
            self.exec(c, sql, params)
            if hold is not None:
                hold[0].set()
                assert hold[1].wait(10)
            if fail:
                raise Boom()

        async def async_busi(c: Any) -> None:
            await self.exec(c, sql, params)
            if hold is not None:
                hold[0].set()
                assert await asyncio.to_thread(hold[1].wait, 10)
            if fail:
                raise Boom()

        if self.sync:
            await asyncio.to_thread(bb.call_sync, conn, sync_busi)
        else:
            await bb.call(conn, async_busi)

    async def request(self, bb: BranchBarrier, *, fail: bool = False) -> None:
        """One branch request: a fresh connection, the barrier call, close."""
        conn = await self.open()
        try:
            await self.call(bb, conn, fail=fail)
        finally:
            await self.close(conn)

    async def query_prepared(self, bb: BranchBarrier) -> None:
        conn = await self.open()
        try:
            if self.sync:
                await asyncio.to_thread(bb.query_prepared_sync, conn)
            else:
                await bb.query_prepared(conn)
        finally:
            await self.close(conn)


# -- the drivers --------------------------------------------------------------------------


async def _aclose(conn: Any) -> None:
    await conn.close()


async def _close_in_thread(conn: Any) -> None:
    await asyncio.to_thread(conn.close)


def _aiosqlite(tmp: Path) -> Harness:
    import aiosqlite

    main, attached = tmp / "aio_main.db", tmp / "aio_barrier.db"

    async def open_() -> Any:
        conn = await aiosqlite.connect(main, timeout=10)
        await conn.execute("ATTACH DATABASE ? AS dtm_barrier", (str(attached),))
        return conn

    async def exec_(conn: Any, sql: str, params: Any) -> None:
        await conn.execute(sql, params)

    return Harness(
        "aiosqlite", Dialect.SQLITE, False, ParamStyle.QMARK, open_, _aclose, exec_,
        sqlite_main=main, sqlite_attached=attached,
    )  # fmt: skip


def _sqlite3(tmp: Path) -> Harness:
    main = tmp / "sync_main.db"

    async def open_() -> Any:
        return sqlite3.connect(main, timeout=10, check_same_thread=False)

    def exec_(conn: Any, sql: str, params: Any) -> None:
        conn.execute(sql, params)

    return Harness(
        "sqlite3", Dialect.SQLITE, True, ParamStyle.QMARK, open_, _close_in_thread, exec_,
        table="barrier", sqlite_main=main,
    )  # fmt: skip


def _asyncmy() -> Harness:
    import asyncmy

    async def open_() -> Any:
        return await asyncmy.connect(**MYSQL)

    async def close(conn: Any) -> None:
        conn.close()

    async def exec_(conn: Any, sql: str, params: Any) -> None:
        async with conn.cursor() as cur:
            await cur.execute(sql, params)

    return Harness("asyncmy", Dialect.MYSQL, False, ParamStyle.FORMAT, open_, close, exec_)


def _pymysql() -> Harness:
    async def open_() -> Any:
        return pymysql.connect(**MYSQL)

    def exec_(conn: Any, sql: str, params: Any) -> None:
        with conn.cursor() as cur:
            cur.execute(sql, params)

    return Harness(
        "pymysql", Dialect.MYSQL, True, ParamStyle.FORMAT, open_, _close_in_thread, exec_
    )


def _asyncpg() -> Harness:
    import asyncpg

    async def open_() -> Any:
        return await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")

    async def exec_(conn: Any, sql: str, params: Any) -> None:
        await conn.execute(sql, *params)

    return Harness("asyncpg", Dialect.POSTGRES, False, ParamStyle.NUMERIC, open_, _aclose, exec_)


def _psycopg_async() -> Harness:
    async def open_() -> Any:
        return await psycopg.AsyncConnection.connect(PG_DSN)

    async def exec_(conn: Any, sql: str, params: Any) -> None:
        await conn.execute(sql, params)

    return Harness(
        "psycopg-async", Dialect.POSTGRES, False, ParamStyle.FORMAT, open_, _aclose, exec_
    )


def _psycopg_sync() -> Harness:
    async def open_() -> Any:
        return psycopg.connect(PG_DSN)

    def exec_(conn: Any, sql: str, params: Any) -> None:
        conn.execute(sql, params)

    return Harness(
        "psycopg-sync", Dialect.POSTGRES, True, ParamStyle.FORMAT, open_, _close_in_thread, exec_
    )


def _sqlalchemy_async(name: str, url: str, dialect: Dialect) -> Harness:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    # NullPool: no pooled connection outlives the test's event loop.
    engine = create_async_engine(url, poolclass=NullPool)

    async def open_() -> Any:
        return await engine.connect()

    async def exec_(conn: Any, sql: str, params: Any) -> None:
        await conn.execute(text(sql), params)

    return Harness(name, dialect, False, ParamStyle.NAMED, open_, _aclose, exec_)


def _sqlalchemy_sync(name: str, url: str, dialect: Dialect, **kw: Any) -> Harness:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, **kw)

    async def open_() -> Any:
        return engine.connect()

    def exec_(conn: Any, sql: str, params: Any) -> None:
        conn.execute(text(sql), params)

    return Harness(name, dialect, True, ParamStyle.NAMED, open_, _close_in_thread, exec_)


def _sqlalchemy_sqlite(tmp: Path) -> Harness:
    main = tmp / "sa_main.db"
    h = _sqlalchemy_sync(
        "sqlalchemy-sqlite", f"sqlite:///{main}", Dialect.SQLITE,
        connect_args={"timeout": 10, "check_same_thread": False},
    )  # fmt: skip
    h.table, h.sqlite_main = "barrier", main
    return h


BACKENDS = (
    "aiosqlite",
    "sqlite3",
    "asyncmy",
    "pymysql",
    "asyncpg",
    "psycopg-async",
    "psycopg-sync",
    "sqlalchemy-async-pg",
    "sqlalchemy-async-mysql",
    "sqlalchemy-sync-pg",
    "sqlalchemy-sync-mysql",
    "sqlalchemy-sqlite",
)


_CACHE: dict[str, Harness] = {}


async def get_harness(name: str, tmp: Path) -> Harness:
    """The ready harness called `name` (one of BACKENDS), made once per session."""
    if name not in _CACHE:
        _CACHE[name] = make_harness(name, tmp)
    await _CACHE[name].ready()
    return _CACHE[name]


def make_harness(name: str, tmp: Path) -> Harness:
    """A new harness called `name` (one of BACKENDS); SQLite files go under `tmp`."""
    makers: dict[str, Callable[[], Harness]] = {
        "aiosqlite": lambda: _aiosqlite(tmp),
        "sqlite3": lambda: _sqlite3(tmp),
        "asyncmy": _asyncmy,
        "pymysql": _pymysql,
        "asyncpg": _asyncpg,
        "psycopg-async": _psycopg_async,
        "psycopg-sync": _psycopg_sync,
        "sqlalchemy-async-pg": lambda: _sqlalchemy_async(
            "sqlalchemy-async-pg", "postgresql+asyncpg://postgres@127.0.0.1/postgres",
            Dialect.POSTGRES,
        ),
        "sqlalchemy-async-mysql": lambda: _sqlalchemy_async(
            "sqlalchemy-async-mysql", "mysql+asyncmy://root:@127.0.0.1:3306/",
            Dialect.MYSQL,
        ),
        "sqlalchemy-sync-pg": lambda: _sqlalchemy_sync(
            "sqlalchemy-sync-pg", "postgresql+psycopg://postgres@127.0.0.1/postgres",
            Dialect.POSTGRES,
        ),
        "sqlalchemy-sync-mysql": lambda: _sqlalchemy_sync(
            "sqlalchemy-sync-mysql", "mysql+pymysql://root:@127.0.0.1:3306/",
            Dialect.MYSQL,
        ),
        "sqlalchemy-sqlite": lambda: _sqlalchemy_sqlite(tmp),
    }  # fmt: skip
    return makers[name]()
