"""One small async database layer for the rpc services: MySQL/MariaDB (asyncmy) or SQLite.

Business SQL is written once with `?` placeholders and backtick-quoted names (both dialects
accept backticks); the MySQL side turns `?` into `%s`. `connection()` hands out an idle
driver connection, which is what the dtmx barrier wants: it opens and ends the local
transaction itself. Driver errors are translated here, once: a unique-key violation becomes
`DuplicateKey`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from dtmx.client.barrier import ensure_table
from mall.common.config import ConfigError, RpcServerConf

Row = tuple[Any, ...]


# "already exists" notes of CREATE ... IF NOT EXISTS make asyncmy fetch and log them as
# warnings at every start: sessions run without notes.
_NO_NOTES = "SET SESSION sql_notes = 0"


class DuplicateKey(Exception):
    """An INSERT hit a unique key."""


class Dialect(StrEnum):
    """Which SQL server a `Database` talks to."""

    MYSQL = "mysql"
    SQLITE = "sqlite"


@dataclass(frozen=True)
class MySQLParams:
    """Connection parameters parsed from a go-sql-driver DSN."""

    host: str
    port: int
    user: str
    password: str
    db: str


_DSN = re.compile(
    r"^(?:(?P<user>[^:@]*)(?::(?P<password>[^@]*))?@)?"
    r"(?:tcp\((?P<addr>[^)]*)\))?/(?P<db>[^?]*)(?:\?(?P<query>.*))?$"
)


def parse_mysql_dsn(dsn: str) -> MySQLParams:
    """`root:pw@tcp(127.0.0.1:3306)/mall?charset=utf8` -> MySQLParams (go-zero's format)."""
    m = _DSN.match(dsn.strip())
    if not m or not m.group("db"):
        raise ConfigError(f"MySQL.DataSource {dsn!r} is not user:pass@tcp(host:port)/db")
    host, _, port = (m.group("addr") or "127.0.0.1:3306").partition(":")
    parse_qs(m.group("query") or "")  # parameters (charset, parseTime, loc) need no action
    return MySQLParams(
        host=host or "127.0.0.1",
        port=int(port or 3306),
        user=unquote(m.group("user") or "root"),
        password=unquote(m.group("password") or ""),
        db=m.group("db"),
    )


def _is_duplicate(e: BaseException) -> bool:
    # asyncmy: IntegrityError(1062, ...); sqlite3: IntegrityError "UNIQUE constraint failed".
    args = getattr(e, "args", ())
    if args and args[0] == 1062:
        return True
    return type(e).__name__ == "IntegrityError" and "UNIQUE" in str(e)


class Database:
    """A pool (MySQL) or one serialized connection (SQLite) with tiny query helpers."""

    def __init__(self, dialect: Dialect, *, barrier_table: str) -> None:
        self.dialect = dialect
        self.barrier_table = barrier_table
        self._pool: Any = None
        self._sqlite: Any = None
        self._sqlite_lock = asyncio.Lock()

    @classmethod
    async def open(cls, conf: RpcServerConf, ddl: Mapping[Dialect, Sequence[str]]) -> Database:
        """Connect as the config says (MySQL if given, else SQLite) and create the schema."""
        if conf.MySQL is not None and conf.MySQL.DataSource:
            db = cls(Dialect.MYSQL, barrier_table=conf.BarrierTable)
            await db._open_mysql(parse_mysql_dsn(conf.MySQL.DataSource))
        elif conf.SQLite is not None and conf.SQLite.Path:
            # SQLite has no databases to qualify a table with: keep the barrier beside the data.
            table = conf.BarrierTable.rpartition(".")[2]
            db = cls(Dialect.SQLITE, barrier_table=table)
            await db._open_sqlite(conf.SQLite.Path)
        else:
            raise ConfigError("configure MySQL.DataSource or SQLite.Path")
        try:
            await db.ensure_schema(ddl[db.dialect])
        except BaseException:
            await db.close()
            raise
        return db

    async def _open_mysql(self, p: MySQLParams) -> None:
        import asyncmy

        # Create the business database on first start, as a newcomer would by hand.
        conn = await asyncmy.connect(host=p.host, port=p.port, user=p.user, password=p.password,
                                     init_command=_NO_NOTES)
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"CREATE DATABASE IF NOT EXISTS `{p.db}`")
        finally:
            conn.close()
        self._pool = await asyncmy.create_pool(
            host=p.host, port=p.port, user=p.user, password=p.password, db=p.db,
            autocommit=True, minsize=1, maxsize=10, echo=False, init_command=_NO_NOTES,
        )  # fmt: skip

    async def _open_sqlite(self, path: str) -> None:
        import aiosqlite

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; the barrier issues BEGIN IMMEDIATE.
        self._sqlite = await aiosqlite.connect(path, isolation_level=None, timeout=10)

    async def ensure_schema(self, statements: Sequence[str]) -> None:
        """Run the service's DDL and create the barrier table, idempotently."""
        async with self.connection() as conn:
            for sql in statements:
                await self.execute(conn, sql)
            await ensure_table(conn, self.barrier_table)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """An idle driver connection (asyncmy or aiosqlite), for the barrier or a query."""
        if self._pool is not None:
            async with self._pool.acquire() as conn:
                yield conn
            return
        async with self._sqlite_lock:  # one connection: one user at a time
            yield self._sqlite

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect is Dialect.MYSQL else sql

    async def execute(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement on `conn`; the number of rows it changed."""
        try:
            if self.dialect is Dialect.MYSQL:
                async with conn.cursor() as cur:
                    return int(await cur.execute(self._sql(sql), tuple(params)))
            async with conn.execute(sql, tuple(params)) as cur:
                return int(cur.rowcount)
        except Exception as e:
            if _is_duplicate(e):
                raise DuplicateKey(str(e)) from None
            raise

    async def fetchone(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or None."""
        rows = await self.fetchall(conn, sql, params)
        return rows[0] if rows else None

    async def fetchall(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""
        if self.dialect is Dialect.MYSQL:
            async with conn.cursor() as cur:
                await cur.execute(self._sql(sql), tuple(params))
                return [tuple(r) for r in await cur.fetchall()]
        async with conn.execute(sql, tuple(params)) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """`fetchall` on a connection of its own (outside any transaction)."""
        async with self.connection() as conn:
            return await self.fetchall(conn, sql, params)

    async def close(self) -> None:
        """Close the pool or the connection."""
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None
        if self._sqlite is not None:
            await self._sqlite.close()
            self._sqlite = None
