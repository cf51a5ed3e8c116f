"""Fixtures for the XA tests: a real server per store, the XA branch service, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from dtmx.client import DtmClient
from tests.support import xa_busi
from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.services import STORES
from tests.support.xa_busi import XaBranches


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """One server per store (SQLite, MySQL, PostgreSQL, Redis), isolated under a name of its
    own: a database, a schema, a key prefix or a file."""
    workdir = str(tmp_path_factory.mktemp("xa"))
    with scratch_store(request.param, "xa", workdir) as block, \
            ServerProcess(store=block, workdir=workdir) as s:
        yield s


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
