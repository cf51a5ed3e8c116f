"""Store backends behind the one `Store` protocol, chosen by settings."""

from __future__ import annotations

from dtmx.settings import Settings, store_target
from dtmx.stores.base import Store


def make_store(settings: Settings) -> Store:
    """Build (not open) the store the settings name."""
    t = store_target(settings.Store)
    pool = settings.Store.MaxOpenConns
    if t.driver == "redis":
        from dtmx.stores.redis_store import RedisStore

        return RedisStore(
            t.url,
            prefix=t.prefix,
            finished_ttl=float(settings.Store.FinishedDataExpire),
            data_ttl=float(settings.Store.DataExpire),
            pool_size=pool,
        )
    from dtmx.stores.sql import SqlStore

    if t.driver == "sqlite":
        return SqlStore.sqlite(t.db)
    if t.driver == "mysql":
        return SqlStore.mysql(
            host=t.host, port=t.port, user=t.user, password=t.password, db=t.db, pool_size=pool
        )
    return SqlStore.postgres(
        host=t.host, port=t.port, user=t.user, password=t.password, db=t.db, schema=t.schema,
        pool_size=pool,
    )
