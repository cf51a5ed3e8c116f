"""Fixtures every test directory may use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


@pytest.fixture
def cleanup() -> Iterator[contextlib.ExitStack]:
    """Processes and servers a test starts go in here and are stopped whatever happens."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[object]:
    """A 3-master Redis Cluster of this test session (tests.support.redis_cluster)."""
    from tests.support.redis_cluster import RedisCluster

    cluster = RedisCluster(masters=3)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
