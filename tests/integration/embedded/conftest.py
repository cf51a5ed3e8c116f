"""Stores for the embedded engine's tests, on the real servers: SQLite in tmp_path,
PostgreSQL schema `dtmx_embed` (dropped at fixture start), Redis under a unique prefix
(deleted afterwards). Run under `flock /tmp/dtmx-itest.lock` with the other integration
tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dtmx.store_settings import StoreSettings

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_SCHEMA = "dtmx_embed"
REDIS_URL = "redis://127.0.0.1:6379/0"


async def drop_pg_schema(schema: str = PG_SCHEMA) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def drop_redis_prefix(prefix: str) -> None:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in r.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path
                ) -> AsyncIterator[StoreSettings]:
    """A fresh store every test: the settings an `Embedded` (or a server) opens."""
    kind: str = request.param
    if kind == "sqlite":
        yield StoreSettings(Url=f"sqlite:///{tmp_path / 'dtmx.db'}")
    elif kind == "postgres":
        await drop_pg_schema()
        yield StoreSettings(Url=PG_URL, Schema=PG_SCHEMA)
    else:
        prefix = "{dtmx-embed-" + uuid.uuid4().hex[:10] + "}"
        try:
            yield StoreSettings(Url=REDIS_URL, RedisPrefix=prefix)
        finally:
            await drop_redis_prefix(prefix)
