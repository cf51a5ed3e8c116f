"""Store backends behind the one `Store` protocol, chosen by settings."""

from __future__ import annotations

from dtmx.security.tls import store_context
from dtmx.settings import Settings
from dtmx.store_settings import StoreDriver, store_target
from dtmx.stores.base import Store


def make_store(settings: Settings) -> Store:
    """Build (not open) the store the settings name. Each backend's module is imported
    only when chosen (it imports its driver)."""
    t = store_target(settings.Store)
    pool = settings.Store.MaxOpenConns
    match t.driver:
        case StoreDriver.REDIS:
            from dtmx.stores.redis_store import RedisStore

            return RedisStore(
                t.url,
                prefix=t.prefix,
                finished_ttl=float(settings.Store.FinishedDataExpire),
                data_ttl=float(settings.Store.DataExpire),
                pool_size=pool,
                ca_file=settings.Tls.StoreCaFile,  # for rediss://
                partitions=settings.Store.RedisPartitions,
            )
        case StoreDriver.SQLITE:
            from dtmx.stores.sql.sqlite import SqliteStore

            return SqliteStore(t.db)
        case StoreDriver.MYSQL:
            from dtmx.stores.sql.mysql import MysqlStore

            return MysqlStore(
                host=t.host, port=t.port, user=t.user, password=t.password, db=t.db,
                pool_size=pool, ssl=store_context(settings.Tls),
                batch_lanes=settings.Store.WriteBatchLanes,
            )
        case StoreDriver.POSTGRES:
            from dtmx.stores.sql.postgres import PostgresStore

            return PostgresStore(
                host=t.host, port=t.port, user=t.user, password=t.password, db=t.db,
                schema=t.schema, pool_size=pool, ssl=store_context(settings.Tls),
                batch_lanes=settings.Store.WriteBatchLanes,
            )
