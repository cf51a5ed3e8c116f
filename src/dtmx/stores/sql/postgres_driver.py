"""PostgreSQL via an asyncpg pool; tables live in `schema` (search_path), as DTM's Store.Schema.

The database must exist; the schema is created if missing (with `create`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, suppress
from ssl import SSLContext
from typing import Any

import asyncpg

from dtmx.errors import StoreError, StoreUnavailable
from dtmx.stores.sql.conn import (
    PooledBackend,
    Row,
    Tx,
    UniqueViolation,
    transaction_scope,
)
from dtmx.stores.sql.dialect import POSTGRES

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    # raised when the server dropped the connection while asyncpg was between states
    asyncpg.InternalClientError,
)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except asyncpg.UniqueViolationError as e:
        raise UniqueViolation(f"postgres: {e}") from e
    except _UNAVAILABLE as e:
        raise StoreUnavailable(f"postgres unavailable: {e}") from e
    except asyncpg.InvalidCatalogNameError as e:
        raise StoreError(f"postgres: {e} (the database must exist)") from e
    except asyncpg.InterfaceError as e:
        if "closed" in str(e):
            raise StoreUnavailable(f"postgres unavailable: {e}") from e
        raise StoreError(f"postgres: {e}") from e
    except asyncpg.PostgresError as e:
        raise StoreError(f"postgres: {e}") from e


def _count(status: str) -> int:
    """Rows affected, from a command tag such as 'UPDATE 3' or 'INSERT 0 1'."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def _keep_session(conn: Any) -> None:
    """Pool reset hook: nothing to undo.

    asyncpg's default reset sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` on every release, one more round trip per store call (a quarter of them on
    the hot path). The store never listens, locks advisorily, opens cursors or changes
    settings, and asyncpg still rolls back a transaction left open before calling this.
    """


class _PgTx(Tx):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with _translated():
            return list(await self._conn.fetch(POSTGRES.q(sql), *args))

    async def execute(self, sql: str, args: Sequence[Any] | None = ()) -> int:
        with _translated():
            if args is None:
                return _count(await self._conn.execute(sql))
            return _count(await self._conn.execute(POSTGRES.q(sql), *args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with _translated():
            await self._conn.executemany(POSTGRES.q(sql), [tuple(r) for r in rows])


class PostgresBackend(PooledBackend):
    """A pool of `pool_size` connections to database `db`, tables in `schema`."""

    dialect = POSTGRES
    name = "postgres"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        db: str,
        schema: str = "public",
        pool_size: int = 10,
        connect_timeout: float = 5.0,
        ssl: SSLContext | None = None,
    ) -> None:
        if not _NAME.match(schema):
            raise StoreError(f"invalid postgres schema name {schema!r}")
        self._kw: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": user,
            "password": password or None,
            "database": db,
            "timeout": connect_timeout,
        }
        if ssl is not None:  # TLS, verified as the context says (dtmx.security.tls)
            self._kw["ssl"] = ssl
        self.schema = schema
        self._pool_size = pool_size

    async def open(self, *, create: bool) -> None:
        """Open the pool (creating the schema first when `create`); StoreUnavailable if
        unreachable.
        """
        with _translated():
            if create and self.schema != "public":
                conn = await asyncpg.connect(**self._kw)
                try:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                except (asyncpg.UniqueViolationError, asyncpg.DuplicateSchemaError):
                    pass  # another server created it at the same moment
                finally:
                    await conn.close()
            self._pool = await asyncpg.create_pool(
                min_size=1,
                max_size=self._pool_size,
                server_settings={"search_path": self.schema},
                reset=_keep_session,
                **self._kw,
            )

    async def close(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with _translated():
                await pool.close()

    def _executor(self, conn: Any) -> Tx:
        return _PgTx(conn)

    def _translated(self) -> AbstractContextManager[None]:
        return _translated()

    async def _drop(self, conn: Any) -> None:
        # asyncpg may have released it already, and then terminate() complains: the
        # original error is what matters
        with suppress(Exception):
            conn.terminate()

    async def _release(self, conn: Any) -> None:
        with suppress(Exception):
            await self._pool.release(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One transaction on a pooled connection; rolled back on error."""
        async with self._acquire() as conn:
            tr = conn.transaction()
            async with transaction_scope(
                _PgTx(conn), begin=tr.start, commit=tr.commit, rollback=tr.rollback,
                translated=_translated,
            ) as tx:
                yield tx
