"""SQLite via aiosqlite: one connection to a file database, guarded by an asyncio.Lock.

WAL journal and synchronous=NORMAL (durable across application crashes, fast commits);
busy_timeout lets several processes share the file; writes use BEGIN IMMEDIATE so a
transaction holds the write lock from its first statement (no lock upgrades that fail).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import aiosqlite

from dtmx.errors import StoreError, StoreUnavailable
from dtmx.stores.sql.conn import Backend, Executor, Row, Tx, UniqueViolation
from dtmx.stores.sql.dialect import SQLITE


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as e:
        if "UNIQUE" in str(e):
            raise UniqueViolation(str(e)) from e
        raise StoreError(f"sqlite: {e}") from e
    except sqlite3.OperationalError as e:
        if "unable to open" in str(e):
            raise StoreUnavailable(f"sqlite: {e}") from e
        raise StoreError(f"sqlite: {e}") from e
    except (sqlite3.Error, ValueError) as e:  # ValueError: operation on a closed connection
        raise StoreError(f"sqlite: {e}") from e


class _SqliteTx(Tx):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with _translated():
            async with self._db.execute(sql, tuple(args)) as cur:
                return list(await cur.fetchall())

    async def execute(self, sql: str, args: Sequence[Any] | None = ()) -> int:
        with _translated():
            async with self._db.execute(sql, tuple(args or ())) as cur:
                return int(cur.rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with _translated():
            await self._db.executemany(sql, [tuple(r) for r in rows])


class SqliteBackend(Backend):
    """One file database; `path` may not be ':memory:' shared across processes."""

    dialect = SQLITE

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        # One connection serves everything: aiosqlite runs it on one thread anyway, and
        # the lock keeps one coroutine's transaction from interleaving with another's.
        self._lock = asyncio.Lock()

    async def open(self, *, create: bool) -> None:
        if self.path != ":memory:" and not Path(self.path).parent.exists():
            raise StoreUnavailable(f"sqlite: directory of {self.path!r} does not exist")
        with _translated():
            # isolation_level=None: the sqlite3 module must not open transactions itself.
            db = await aiosqlite.connect(self.path, isolation_level=None)
            try:
                await db.execute("PRAGMA journal_mode=WAL")
                await db.execute("PRAGMA synchronous=NORMAL")
                await db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            except BaseException:
                await db.close()
                raise
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            with _translated():
                await db.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailable("sqlite store is not open")
        return self._db

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Executor]:
        async with self._lock:
            yield _SqliteTx(self._conn())

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:
            db = self._conn()
            with _translated():
                await db.execute("BEGIN IMMEDIATE")
            tx = _SqliteTx(db)
            try:
                yield tx
            except BaseException:
                # the original error matters more than a failed rollback
                with suppress(StoreError), _translated():
                    await db.execute("ROLLBACK")
                raise
            with _translated():
                await db.execute("ROLLBACK" if tx.rollback else "COMMIT")
