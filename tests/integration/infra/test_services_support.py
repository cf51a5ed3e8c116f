"""The DSNs from tests/support/services.py reach the services scripts/services.sh set up."""

from __future__ import annotations

import asyncmy
import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.support import services


async def test_mariadb_reachable_with_test_databases() -> None:
    conn = await asyncmy.connect(**services.mysql().kwargs(db_key="db"))
    try:
        async with conn.cursor() as cur:
            await cur.execute("SHOW DATABASES")
            names = {row[0] for row in await cur.fetchall()}
    finally:
        conn.close()
    assert {"dtm", "dtm_barrier", "dtmx_test_store"} <= names


async def test_postgres_reachable() -> None:
    conn = await asyncpg.connect(services.pg_dsn())
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_redis_reachable() -> None:
    client = aioredis.from_url(services.redis_url())
    try:
        assert await client.ping()
    finally:
        await client.aclose()


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTMX_TEST_PG_HOST", "db.example")
    monkeypatch.setenv("DTMX_TEST_PG_PASSWORD", "p@ss word")
    monkeypatch.setenv("DTMX_TEST_REDIS_URL", "redis://:secret@r.example:7000/3")
    assert services.pg_dsn("x") == "postgresql://postgres:p%40ss%20word@db.example:5432/x"
    assert services.redis_params() == {
        "host": "r.example", "port": 7000, "db": 3, "username": "", "password": "secret",
    }  # fmt: skip
    assert services.store_conf("postgres", db="x")["Host"] == "db.example"
