"""The SQL stores: SQLite, MySQL/MariaDB (10.6+) and PostgreSQL behind one `SqlStore`.

Build one with a factory, then `await store.open()`::

    SqlStore.sqlite("/var/lib/dtmx/dtmx.db")
    SqlStore.mysql(host, port, user, password, db="dtm", pool_size=10)
    SqlStore.postgres(host, port, user, password, db="postgres", schema="public", pool_size=10)
    open_sql_store("mysql", host=..., ...)          # the same, by driver name

`open()` connects; with `create=True` (the default) it creates what is missing on first
start: the SQLite file, the MySQL database `db`, the Postgres schema (the Postgres database
itself must exist), and the tables. A schema whose version is behind this code raises
`StoreError` asking the operator to run `dtmx migrate`, which calls `migrate(store)`.

Tables follow DTM (`trans_global`, `trans_branch_op`, `kv`) plus `dtmx_schema_version`;
the DDL lives in the `<dialect>_<NNNN>_*.sql` files of this package. Times are stored as
DATETIME(6) UTC (MySQL), timestamptz (Postgres, microseconds) or REAL epoch seconds
(SQLite); `next_cron_interval` is a double (seconds); retry_count lives in the `options`
JSON with DTM's field names.
"""

from __future__ import annotations

from typing import Any

from dtmx.errors import ConfigError
from dtmx.stores.sql.store import SqlStore

__all__ = ["SqlStore", "migrate", "open_sql_store"]


def open_sql_store(driver: str, **kw: Any) -> SqlStore:
    """A (not yet opened) SqlStore for `driver` in {'sqlite', 'mysql', 'postgres'};
    `kw` are the factory's arguments (sqlite: path)."""
    if driver == "sqlite":
        return SqlStore.sqlite(**kw)
    if driver == "mysql":
        return SqlStore.mysql(**kw)
    if driver == "postgres":
        return SqlStore.postgres(**kw)
    raise ConfigError(f"unknown SQL store driver {driver!r}", driver=driver)


async def migrate(store: SqlStore) -> list[int]:
    """Bring the store's schema up to this code's version; returns the versions applied.
    Works on a store built with `create=False` whose `open()` refused an old schema."""
    await store.backend.open(create=True)
    try:
        return await store.migrate()
    finally:
        await store.backend.close()
