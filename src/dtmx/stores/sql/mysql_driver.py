"""MySQL / MariaDB via an asyncmy pool.

Connections run in autocommit mode with CLIENT_FOUND_ROWS, so an UPDATE reports the rows
it matched (not only those it changed): compare-and-set results depend on that.

They also allow several statements per request (CLIENT_MULTI_STATEMENTS): `script` sends a
whole transaction (START TRANSACTION; ...; COMMIT) in one round trip instead of one per
statement. Every parameter still goes through the driver's escaping (`mogrify`), and no
statement text comes from outside, so this opens no injection path.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from ssl import SSLContext
from typing import Any

import asyncmy
from asyncmy import errors as myerr
from asyncmy.constants import CLIENT

from dtmx.errors import StoreError, StoreUnavailable
from dtmx.stores.sql.conn import (
    PooledBackend,
    Row,
    Statement,
    Tx,
    UniqueViolation,
    transaction_scope,
)
from dtmx.stores.sql.dialect import MYSQL

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DUP_ENTRY = 1062
# Client-side "can't connect", "server gone away", "lost connection" and friends.
_UNAVAILABLE = {1040, 1053, 2002, 2003, 2005, 2006, 2012, 2013, 2014, 2055}


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except myerr.IntegrityError as e:
        if e.args and e.args[0] == _DUP_ENTRY:
            raise UniqueViolation(f"mysql: {e.args[-1]}") from e
        raise StoreError(f"mysql: {e}") from e
    except myerr.MySQLError as e:
        code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
        if code in _UNAVAILABLE or isinstance(e, myerr.InterfaceError):
            raise StoreUnavailable(f"mysql unavailable: {e}") from e
        raise StoreError(f"mysql: {e}") from e
    except (OSError, TimeoutError) as e:
        raise StoreUnavailable(f"mysql unavailable: {e}") from e


class _MysqlTx(Tx):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with _translated():
            async with self._conn.cursor() as cur:
                await cur.execute(MYSQL.q(sql), tuple(args))
                return list(await cur.fetchall())

    async def execute(self, sql: str, args: Sequence[Any] | None = ()) -> int:
        with _translated():
            async with self._conn.cursor() as cur:
                if args is None:
                    await cur.execute(sql)
                else:
                    await cur.execute(MYSQL.q(sql), tuple(args))
                return int(cur.rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with _translated():
            async with self._conn.cursor() as cur:
                await cur.executemany(MYSQL.q(sql), [tuple(r) for r in rows])


class MysqlBackend(PooledBackend):
    """A pool of `pool_size` connections to database `db` (created if missing)."""

    dialect = MYSQL
    name = "mysql"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        db: str,
        pool_size: int = 10,
        connect_timeout: float = 5.0,
        ssl: SSLContext | None = None,
    ) -> None:
        if not _NAME.match(db):
            raise StoreError(f"invalid mysql database name {db!r}")
        self._kw: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "charset": "utf8mb4",
            "connect_timeout": connect_timeout,
            "client_flag": CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS,
            "autocommit": True,
            # bytes as _binary'...' literals, so non-UTF-8 payloads reach BLOB columns intact
            "binary_prefix": True,
            # READ COMMITTED: no gap locks, so claim_due's locking SELECT does not block
            # concurrent inserts of new transactions; CAS updates read the latest row anyway.
            "init_command": "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        }
        if ssl is not None:  # TLS, verified as the context says (dtmx.security.tls)
            self._kw["ssl"] = ssl
        self.db = db
        self._pool_size = pool_size

    async def open(self, *, create: bool) -> None:
        """Open the pool (creating the database first when `create`); StoreUnavailable if
        unreachable.
        """
        with _translated():
            if create:
                conn = await asyncmy.connect(**self._kw)
                try:
                    async with conn.cursor() as cur:
                        await cur.execute("SET SESSION sql_notes = 0")  # no "exists" note
                        await cur.execute(
                            f"CREATE DATABASE IF NOT EXISTS `{self.db}`"
                            " DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                        )
                finally:
                    conn.close()
            self._pool = await asyncmy.create_pool(
                minsize=1, maxsize=self._pool_size, db=self.db, **self._kw
            )

    async def close(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
            await pool.wait_closed()

    def _executor(self, conn: Any) -> Tx:
        return _MysqlTx(conn)

    def _translated(self) -> AbstractContextManager[None]:
        return _translated()

    async def _drop(self, conn: Any) -> None:
        conn.close()

    async def _release(self, conn: Any) -> None:
        self._pool.release(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One transaction on a pooled connection; rolled back on error."""
        async with self._acquire() as conn, transaction_scope(
            _MysqlTx(conn), begin=conn.begin, commit=conn.commit, rollback=conn.rollback,
            translated=_translated,
        ) as tx:
            yield tx

    async def script(self, statements: Sequence[Statement]) -> list[tuple[int, list[Row]]]:
        """Run `statements` as one transaction in one network round trip; for each, the
        rows it matched and the rows it returned. Rolled back if any statement fails (a
        UniqueViolation tells which one in `statement`)."""
        async with self._acquire() as conn:
            cur = conn.cursor()
            text = ";".join(
                ["START TRANSACTION"]
                + [cur.mogrify(MYSQL.q(sql), tuple(args)) for sql, args in statements]
                + ["COMMIT"]
            )
            out: list[tuple[int, list[Row]]] = []
            at = -1  # the statement whose result is being read; -1: START TRANSACTION
            try:
                with _translated():
                    # args=None: the text is sent as is (it is already escaped)
                    await cur.execute(text)
                    for i in range(len(statements)):
                        at = i
                        await cur.nextset()
                        rows = list(await cur.fetchall()) if cur.description else []
                        out.append((int(cur.rowcount), rows))
                    at = len(statements)
                    await cur.nextset()  # COMMIT
                    await cur.close()
            except StoreError as e:
                # the server stops at the failing statement with the transaction open
                if isinstance(e, UniqueViolation):
                    e.statement = at
                if not isinstance(e, StoreUnavailable):
                    try:
                        with _translated():
                            await conn.rollback()
                    except StoreError as again:
                        raise StoreUnavailable(f"mysql: rollback failed: {again}") from e
                raise
            return out
