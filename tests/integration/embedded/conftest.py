"""Stores for the embedded engine's tests, on the real servers: SQLite in tmp_path, a
PostgreSQL schema and a Redis key prefix of each test's own (tests.support.scratch: dropped
afterwards). Run under `flock /tmp/dtmx-itest.lock` with the other integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dtmx.store_settings import StoreSettings
from tests.support.scratch import scratch

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path
                ) -> AsyncIterator[StoreSettings]:
    """A fresh store every test: the settings an `Embedded` (or a server) opens."""
    kind: str = request.param
    if kind == "sqlite":
        yield StoreSettings(Url=f"sqlite:///{tmp_path / 'dtmx.db'}")
    elif kind == "postgres":
        with scratch("postgres", "dtmx_embed") as name:
            yield StoreSettings(Url=PG_URL, Schema=name)
    else:
        with scratch("redis", "dtmx_embed") as name:
            yield StoreSettings(Url=REDIS_URL, RedisPrefix="{" + name + "}")
