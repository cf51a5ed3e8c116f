"""Fixtures for the XA tests: a real server per store, the XA branch service, a client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from dtmx.client import DtmClient
from tests.support import xa_busi
from tests.support.server import ServerProcess
from tests.support.services import STORES, store_block
from tests.support.xa_busi import XaBranches


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """One server per store (SQLite, MySQL, PostgreSQL, Redis), isolated under a name of its
    own: a database, a schema, a key prefix or a file."""
    name = f"xa_{uuid.uuid4().hex[:8]}"
    workdir = str(tmp_path_factory.mktemp("xa"))
    s = ServerProcess(store=store_block(request.param, name, workdir), workdir=workdir).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def branches(server: ServerProcess) -> Iterator[XaBranches]:
    xa_busi.setup_tables()
    b = XaBranches(server.url).start()
    yield b
    b.stop()


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[DtmClient]:
    c = DtmClient(server.url)
    yield c
    await c.aclose()


@pytest.fixture(params=xa_busi.DBS)
def db(request: pytest.FixtureRequest, branches: XaBranches) -> Iterator[str]:
    yield request.param
    branches.fail.clear()
    branches.down.clear()
