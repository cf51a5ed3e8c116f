"""The SQL stores: `SqliteStore`, `MysqlStore` (MySQL/MariaDB 10.6+) and `PostgresStore`.

Build one (from `dtmx.stores.sql.sqlite`, `.mysql`, `.postgres`; `dtmx.stores.make_store`
picks by settings), then `await store.open()`::

    SqliteStore("/var/lib/dtmx/dtmx.db")
    MysqlStore(host, port, user, password, db="dtm", pool_size=10)
    PostgresStore(host, port, user, password, db="postgres", schema="public", pool_size=10)

`open()` connects; with `create=True` (the default) it creates what is missing on first
start: the SQLite file, the MySQL database `db`, the Postgres schema (the Postgres database
itself must exist), and the tables. A schema whose version is behind this code raises
`StoreError` asking the operator to run `dtmx migrate`, which calls `migrate(store)`.

Each class owns the SQL of the verbs it writes its own way, over the shared `SqlStore`
base; the connection set-up of each is in its `*_driver` module. Tables follow DTM
(`trans_global`, `trans_branch_op`, `kv`) plus `dtmx_schema_version` and the call history
`trans_call` (schema v2, `calls`); the DDL lives in the
`<dialect>_<NNNN>_*.sql` files of this package. Times are stored as DATETIME(6) UTC (MySQL),
timestamptz (Postgres, microseconds) or REAL epoch seconds (SQLite); `next_cron_interval`
is a double (seconds); retry_count lives in the `options` JSON with DTM's field names.
"""

from __future__ import annotations

from dtmx.stores.sql.store import SqlStore

__all__ = ["SqlStore", "migrate"]


async def migrate(store: SqlStore) -> list[int]:
    """Bring the store's schema up to this code's version; returns the versions applied.
    Works on a store built with `create=False` whose `open()` refused an old schema."""
    await store.backend.open(create=True)
    try:
        return await store.migrate()
    finally:
        await store.backend.close()
