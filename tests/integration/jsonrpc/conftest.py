"""A real server per store with its JSON-RPC port open, and a JSON-RPC branch service."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.jrpc_busi import JsonRpcBranches
from tests.support.server import ServerProcess
from tests.support.services import STORES, store_block
from tests.support.util import free_port


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """One server per store (SQLite, MySQL, PostgreSQL, Redis), isolated under a name of its
    own: a database, a schema, a key prefix or a file."""
    name = f"jrpc_{uuid.uuid4().hex[:8]}"
    workdir = str(tmp_path_factory.mktemp("jrpc"))
    s = ServerProcess(store=store_block(request.param, name, workdir), workdir=workdir,
                      extra={"JsonRpcPort": free_port()}).start()
    yield s
    s.stop()


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
