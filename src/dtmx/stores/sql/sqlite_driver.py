"""SQLite: the stdlib sqlite3 module, called directly on the event loop's thread.

Why not a thread per call (aiosqlite): a statement on a local WAL database takes a few
microseconds, while each hop to a worker thread and back costs tens, and a transaction of
four statements made four hops under a lock: the profile showed the hops, not SQLite, capping
throughput. Called inline, a whole store operation costs one short, bounded stretch of the
loop. What could block the loop for long is kept off it:
- waiting for another process's write lock: busy_timeout is 0 and we retry with
  `asyncio.sleep` backoff (up to `busy_timeout_ms`), so other coroutines run meanwhile;
- checkpoints (copying the WAL back into the database, with fsync): automatic checkpoints
  are off on our connection and a second connection checkpoints in a worker thread;
- a write of thousands of rows (a msg fanning out to 10,000 branches takes ~150 ms to
  insert): `off_loop` runs it on a worker thread, on a connection of its own, so the loop
  keeps answering; readers see the last commit (WAL), our writers wait for the lock. The
  thread and its connection live as long as the store is open: a fresh connection per
  call paid connect, PRAGMAs, the schema and the preparing of the large multi-row
  statements each time (a 2,000-row create: 7-10 ms to execute instead of 4).

WAL with synchronous=NORMAL: durable across application crashes (kill -9); an OS crash or
power loss may lose the last commits. `synchronous="FULL"` trades speed for that too.
Writes use BEGIN IMMEDIATE so a transaction holds the write lock from its first statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from dtmx.errors import StoreError, StoreUnavailable
from dtmx.stores.sql.conn import (
    Backend,
    Executor,
    Row,
    Tx,
    UniqueViolation,
    transaction_scope,
)
from dtmx.stores.sql.dialect import SQLITE

log = logging.getLogger("dtmx.store.sqlite")
T = TypeVar("T")

#: WAL pages after which the background checkpoint runs (SQLite's own default is 1000).
CHECKPOINT_PAGES = 1000


def _busy(e: sqlite3.OperationalError) -> bool:
    msg = str(e)
    return "database is locked" in msg or "database is busy" in msg


class _Busy(StoreError):
    """Another process holds the database's write lock."""

    server_fault = False  # contention, not a fault: one line, as an outage


class _translated:
    """`with _translated():` sqlite3's errors as ours. A class, not a generator: it wraps
    every statement, and a generator context manager costs several times more."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, e: BaseException | None,
                 tb: object) -> None:
        if e is None:
            return
        if isinstance(e, sqlite3.IntegrityError):
            if "UNIQUE" in str(e):
                raise UniqueViolation(str(e)) from e
            raise StoreError(f"sqlite: {e}") from e
        if isinstance(e, sqlite3.OperationalError):
            if _busy(e):
                raise _Busy(f"sqlite: {e}") from e
            if "unable to open" in str(e):
                raise StoreUnavailable(f"sqlite: {e}") from e
            raise StoreError(f"sqlite: {e}") from e
        if isinstance(e, (sqlite3.Error, ValueError)):  # ValueError: on a closed connection
            raise StoreError(f"sqlite: {e}") from e


class _SqliteTx(Tx):
    def __init__(self, backend: SqliteBackend) -> None:
        self._b = backend

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return await self._b.run(lambda db: db.execute(sql, tuple(args)).fetchall())

    async def execute(self, sql: str, args: Sequence[Any] | None = ()) -> int:
        return await self._b.run(lambda db: int(db.execute(sql, tuple(args or ())).rowcount))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._b.run(lambda db: db.executemany(sql, [tuple(r) for r in rows]))


class SqliteBackend(Backend):
    """One file database; `path` may not be ':memory:' shared across processes."""

    dialect = SQLITE

    def __init__(
        self, path: str, *, busy_timeout_ms: int = 5000, synchronous: str = "NORMAL"
    ) -> None:
        self.path = path
        self._busy_timeout = busy_timeout_ms / 1000.0
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self._synchronous = synchronous.upper()
        self._db: sqlite3.Connection | None = None
        # Statements never await in between, but a transaction must not interleave with
        # another coroutine's while it waits (backoff) for another process's write lock.
        self._lock = asyncio.Lock()
        self._checkpointer: asyncio.Task[None] | None = None
        # off_loop's thread and its connection (opened there on first use, touched only there)
        self._worker: ThreadPoolExecutor | None = None
        self._wdb: sqlite3.Connection | None = None

    async def open(self, *, create: bool) -> None:
        """Open the database file (its directory must exist); StoreUnavailable if it cannot be
        opened.
        """
        if self.path != ":memory:" and not Path(self.path).parent.exists():
            raise StoreUnavailable(f"sqlite: directory of {self.path!r} does not exist")
        with _translated():
            # isolation_level=None: the sqlite3 module must not open transactions itself.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db = db
        try:
            await self.run(lambda c: c.execute("PRAGMA journal_mode=WAL").fetchall())
            with _translated():
                db.execute(f"PRAGMA synchronous={self._synchronous}")
                db.execute("PRAGMA busy_timeout=0")
                db.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            self._db = None
            db.close()
            raise
        if self.path != ":memory:":
            self._checkpointer = asyncio.create_task(self._checkpoint_loop())

    async def close(self) -> None:
        """Stop the checkpointer and close the connection."""
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
            self._checkpointer = None
        if self._worker is not None:
            # after the jobs queued before it (one thread, in order): the connection is
            # closed on its own thread, never under a statement still running there
            worker, self._worker = self._worker, None
            await asyncio.get_running_loop().run_in_executor(worker, self._close_worker_db)
            worker.shutdown(wait=False)
        if self._db is not None:
            db, self._db = self._db, None
            with _translated():
                db.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("sqlite store is not open")
        return self._db

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` inline; while another process holds the write lock, back
        off asynchronously and try again (only outside a transaction, where a statement
        that failed with BUSY did nothing)."""
        db = self._conn()
        deadline = 0.0  # set on the first BUSY: most statements never meet one
        pause = 0.0005
        while True:
            try:
                with _translated():
                    return fn(db)
            except _Busy:
                if not deadline:
                    deadline = time.monotonic() + self._busy_timeout
                if db.in_transaction or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _checkpoint_loop(self) -> None:
        """Copy the WAL back into the database from a worker thread, off the event loop."""
        ck = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        running: asyncio.Future[None] | None = None
        try:
            ck.execute("PRAGMA busy_timeout=1000")
            while True:
                await asyncio.sleep(0.5)
                running = asyncio.ensure_future(asyncio.to_thread(_checkpoint, ck))
                try:
                    # shielded: cancelling the loop (close) must not abandon the thread
                    await asyncio.shield(running)
                except sqlite3.Error as e:  # busy or the like: the next round tries again
                    log.debug("checkpoint skipped: %s", e)
        finally:
            if running is not None and not running.done():
                # closing `ck` while the worker thread still uses it crashes the process
                # (SIGSEGV on stop); cut the checkpoint short and wait for the thread
                ck.interrupt()
                with contextlib.suppress(sqlite3.Error):
                    await running
            ck.close()

    async def off_loop(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` as one write transaction (BEGIN IMMEDIATE .. COMMIT, rolled
        back if it raises) on the worker thread and its connection, translating errors as
        inline statements do. An in-memory database runs it inline."""
        async with self._lock:
            if self.path == ":memory:":
                return self._in_transaction(self._conn(), fn)
            self._conn()  # closed: StoreUnavailable, as inline
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="dtmx-sqlite")
            return await asyncio.get_running_loop().run_in_executor(
                self._worker, self._on_worker, fn)

    def _on_worker(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._wdb
        if db is None:
            with _translated():
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                try:
                    db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
                    db.execute(f"PRAGMA synchronous={self._synchronous}")
                    db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
                except BaseException:
                    db.close()
                    raise
            self._wdb = db
        try:
            return self._in_transaction(db, fn)
        except BaseException:
            if db.in_transaction:  # the ROLLBACK failed too: start afresh next time
                self._close_worker_db()
            raise

    def _close_worker_db(self) -> None:
        db, self._wdb = self._wdb, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    @staticmethod
    def _in_transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        with _translated():
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return out

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Executor]:
        """Statements outside an explicit transaction (each autocommits)."""
        yield _SqliteTx(self)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One transaction (serialised: SQLite has one writer); rolled back on error."""
        async with self._lock, transaction_scope(
            _SqliteTx(self), begin=self._begin, commit=self._commit, rollback=self._rollback,
            translated=_translated,
        ) as tx:
            yield tx

    async def _begin(self) -> None:
        await self.run(_begin_immediate)

    async def _commit(self) -> None:
        self._conn().execute("COMMIT")

    async def _rollback(self) -> None:
        self._conn().execute("ROLLBACK")


def _begin_immediate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")


def _checkpoint(ck: sqlite3.Connection) -> None:
    row = ck.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    # (busy, wal pages, pages checkpointed): once all is copied and nobody reads, a later
    # writer restarts the WAL from the beginning, so the file stops growing
    if row and row[1] > 4 * CHECKPOINT_PAGES:
        ck.execute("PRAGMA wal_checkpoint(RESTART)")
