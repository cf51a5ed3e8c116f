"""A real server per store with its JSON-RPC port open, and a JSON-RPC branch service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.jrpc_busi import JsonRpcBranches
from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.services import STORES
from tests.support.util import free_port


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """One server per store (SQLite, MySQL, PostgreSQL, Redis), isolated under a name of its
    own: a database, a schema, a key prefix or a file."""
    workdir = str(tmp_path_factory.mktemp("jrpc"))
    with scratch_store(request.param, "jrpc", workdir) as block, \
            ServerProcess(store=block, workdir=workdir, extra={"JsonRpcPort": free_port()}) as s:
        yield s


@pytest.fixture(scope="module")
def jrpc_url(server: ServerProcess) -> str:
    """The dedicated JsonRpcPort's endpoint (the HTTP port serves the same route)."""
    return f"http://127.0.0.1:{server.conf['JsonRpcPort']}/api/json-rpc"


@pytest.fixture(scope="module")
def busi() -> Iterator[JsonRpcBranches]:
    b = JsonRpcBranches().start()
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def _reset(busi: JsonRpcBranches) -> Iterator[None]:
    yield
    busi.results.clear()
    busi.once.clear()
