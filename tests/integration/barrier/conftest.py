"""Fixtures for the barrier tests: one harness per supported driver, tables created once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.barrier.barrier_backends import BACKENDS, Harness, get_harness


@pytest.fixture(scope="session")
def barrier_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("barrier")


@pytest.fixture(params=BACKENDS)
async def h(request: pytest.FixtureRequest, barrier_tmp: Path) -> Harness:
    """A ready harness for each backend."""
    return await get_harness(request.param, barrier_tmp)
