"""Fixtures for SDK integration tests: one real dtmx server, a fresh branch service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from dtmx.client import DtmClient
from tests.integration.sdk.branch_service import BranchService
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def dtm_server() -> Iterator[ServerProcess]:
    server = ServerProcess().start()
    yield server
    server.stop()


@pytest.fixture
def branches(dtm_server: ServerProcess) -> Iterator[BranchService]:
    svc = BranchService(dtm_server.url).start()
    yield svc
    svc.stop()


@pytest.fixture
async def client(dtm_server: ServerProcess) -> AsyncIterator[DtmClient]:
    c = DtmClient(dtm_server.url)
    yield c
    await c.aclose()
