"""The sub-transaction barrier: exactly-once branch business, safe against null compensation
and hanging requests, with DTM's algorithm and DTM's table.

A branch handler wraps its business in the barrier, inside the local transaction of the
database where the business writes::

    barrier = BranchBarrier.from_query(request.query)
    await barrier.call(conn, lambda c: debit(c, amount))     # async drivers
    barrier.call_sync(conn, lambda c: debit(c, amount))      # blocking drivers

Supported connections: aiosqlite and sqlite3; asyncmy and PyMySQL (MySQL, MariaDB); asyncpg
and psycopg 3 (async and sync); SQLAlchemy AsyncConnection and Connection on any of those
dialects. Another driver can be added by subclassing `AsyncAdapter` or `SyncAdapter` and
passing an instance in place of the connection. Drivers are imported only by the application:
this package needs just the standard library. Redis is supported through
`BranchBarrier.redis_check_adjust_amount` and `redis_query_prepared` on a redis.asyncio client.

The table is DTM's `dtm_barrier.barrier` (see `ddl`), so data written by DTM's clients (Go,
PyPI dtmcli) and by dtmx honour each other. Its name can be changed per barrier (`table=`).

SQLite has no schemas. The default name `dtm_barrier.barrier` means a table `barrier` in a
database ATTACHed as `dtm_barrier` on the same connection, which keeps the layout and SQL of
the other backends; SQLite commits attached databases atomically in its default rollback
journal mode, but not in WAL mode. With WAL, or for a single file, pass `table="barrier"` to
keep the table next to the business data in the main database.
"""

from __future__ import annotations

from dtmx.client._errors import Failure
from dtmx.client.barrier._adapters import AsyncAdapter, SyncAdapter
from dtmx.client.barrier._barrier import BranchBarrier, Duplicated, ensure_table, ensure_table_sync
from dtmx.client.barrier._sql import DEFAULT_TABLE, Dialect, ddl

__all__ = [
    "DEFAULT_TABLE",
    "AsyncAdapter",
    "BranchBarrier",
    "Dialect",
    "Duplicated",
    "Failure",
    "SyncAdapter",
    "ddl",
    "ensure_table",
    "ensure_table_sync",
]
