"""A fresh store per test, on every backend, against the real servers (no mocks).

sqlite: a file in tmp_path; mysql: database `dtmx_test_store`; postgres: database `postgres`,
schema `dtmx_test_store` (both ours, migrated to this code's schema and emptied at fixture
start; DTMX_TEST_STORE_DB names others), with the server's default
of two batch lanes (concurrent writes share round trips); redis: a unique key prefix,
deleted afterwards (tests.support.scratch); memory: `sim.store.MemoryStore`, the
simulation's store, held to the same contract so that what the simulation proves is about a
faithful store.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from dtmx.stores.base import Store
from dtmx.stores.sql import SqlStore, migrate
from dtmx.stores.sql.mysql import MysqlStore
from dtmx.stores.sql.postgres import PostgresStore
from dtmx.stores.sql.sqlite import SqliteStore
from tests.support.scratch import scratch

TEST_DB = os.environ.get("DTMX_TEST_STORE_DB", "dtmx_test_store")
REDIS_URL = os.environ.get("DTMX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SQL_TABLES = ("trans_call", "trans_branch_op", "trans_global", "kv")


def sql_store(kind: str, tmp_path: Path) -> SqlStore:
    if kind == "sqlite":
        return SqliteStore(str(tmp_path / "dtmx.db"))
    if kind == "mysql":
        return MysqlStore("127.0.0.1", 3306, "root", "", TEST_DB, pool_size=4, batch_lanes=2)
    return PostgresStore("127.0.0.1", 5432, "postgres", "", "postgres", TEST_DB, pool_size=4,
                         batch_lanes=2)


async def open_current(s: SqlStore) -> None:
    """Open a store on a database these tests keep between runs: upgraded first, so one
    left at an older schema version by an earlier dtmx opens."""
    await migrate(s)
    await s.open()


async def empty_tables(s: SqlStore) -> None:
    async with s.backend.session() as ex:
        for table in SQL_TABLES:
            await ex.execute(f"DELETE FROM {table}")


@asynccontextmanager
async def fresh(s: SqlStore) -> AsyncIterator[SqlStore]:
    """`s` opened at this code's schema with every table emptied; closed afterwards."""
    await open_current(s)
    try:
        await empty_tables(s)
        yield s
    finally:
        await s.close()


@pytest.fixture(params=["sqlite", "mysql", "postgres", "redis", "redis-cluster", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    kind: str = request.param
    if kind == "memory":
        from sim.store import MemoryStore

        yield MemoryStore()
        return
    if kind.startswith("redis"):
        from dtmx.stores.redis_store import RedisStore

        # the cluster is this session's own: dropped whole at the end, no clean-up here
        url = REDIS_URL if kind == "redis" else request.getfixturevalue("redis_cluster").url
        with scratch(kind, "dtmx_store") as name:
            rs = RedisStore(url, prefix="{" + name + "}", finished_ttl=86400.0)
            await rs.open()
            try:
                yield rs
            finally:
                await rs.close()
        return
    async with fresh(sql_store(kind, tmp_path)) as s:
        yield s
