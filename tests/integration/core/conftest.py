"""A real `dtmx serve` process on SQLite and a real busi branch service, per module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.busi import BusiServer
from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.services import STORES
from tests.support.util import free_port


@pytest.fixture(scope="module")
def busi() -> Iterator[BusiServer]:
    b = BusiServer(free_port()).start()
    yield b
    b.stop()


# the saga, TCC and msg scenarios also run on a 3-master Redis Cluster
_ON_CLUSTER = ("test_saga", "test_tcc_msg")


@pytest.fixture(scope="module", params=[*STORES, "redis-cluster"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """The whole core suite runs once per store: SQLite, MySQL, PostgreSQL and Redis; the
    saga/TCC/msg modules also on a Redis Cluster. A module's `SERVER_EXTRA` settings, if
    it has them, are added to its server's."""
    workdir = str(tmp_path_factory.mktemp("dtmx"))
    url = ""
    if request.param == "redis-cluster":
        if request.module.__name__.rpartition(".")[2] not in _ON_CLUSTER:
            pytest.skip("the cluster runs the saga/TCC/msg scenarios only")
        url = request.getfixturevalue("redis_cluster").url
    extra = getattr(request.module, "SERVER_EXTRA", None)
    with scratch_store(request.param, "dtmx_it", workdir, url) as block, \
            ServerProcess(store=block, workdir=workdir, extra=extra) as s:
        yield s


@pytest.fixture
def gid() -> str:
    return f"it-{uuid.uuid4().hex}"


def post(server: ServerProcess, route: str, body: Any) -> requests.Response:
    return requests.post(f"{server.url}/{route}", json=body, timeout=15)


def saga_body(gid: str, busi: BusiServer, *steps: tuple[str, str], **opts: Any) -> dict[str, Any]:
    return {
        "gid": gid,
        "trans_type": "saga",
        "steps": [{"action": f"{busi.url}/{a}", "compensate": f"{busi.url}/{c}"} for a, c in steps],
        "payloads": ['{"amount": 30}'] * len(steps),
        **opts,
    }


TRANSFER = (("TransOut", "TransOutRevert"), ("TransIn", "TransInRevert"))
