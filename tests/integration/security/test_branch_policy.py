"""BranchPolicy against a real `dtmx serve`: refused as URLs enter (400 / INVALID_ARGUMENT
naming the URL and the rule) and again at connect time on the resolved address.

All traffic stays on 127.0.0.0/8: the denied addresses are loopback ones, and the metadata
URLs are refused before anything is sent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import requests

from dtmx.api.proto import dtmgimp_pb2, dtmgimp_pb2_grpc
from tests.support.busi import BusiServer
from tests.support.grpc_busi import GrpcBusi
from tests.support.server import ServerProcess
from tests.support.util import aeventually, eventually, free_port

BLOCKED = free_port()


@pytest.fixture(scope="module")
def busi() -> Iterator[BusiServer]:
    with BusiServer(free_port()) as b:
        yield b


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    policy = {"Deny": ["127.0.0.2/32", f"*:{BLOCKED}"]}
    with ServerProcess(extra={"BranchPolicy": policy},
                       workdir=str(tmp_path_factory.mktemp("policy"))) as s:
        yield s


@pytest.fixture(scope="module")
def loopback_denied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that may not call 127.0.0.1: names that resolve there are refused on
    connect."""
    policy = {"Deny": ["127.0.0.1/32"]}
    with ServerProcess(extra={"BranchPolicy": policy},
                       workdir=str(tmp_path_factory.mktemp("policy2"))) as s:
        yield s


def _gid() -> str:
    return "policy-" + uuid.uuid4().hex


def _saga(gid: str, action: str, compensate: str) -> dict[str, Any]:
    return {"gid": gid, "trans_type": "saga", "payloads": ['{"amount": 1}'],
            "steps": [{"action": action, "compensate": compensate}]}


def _refused(r: requests.Response, url: str, rule: str) -> None:
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert url in message and rule in message, message


def test_entry_refusals_name_the_url_and_the_rule(server: ServerProcess, busi: BusiServer
                                                  ) -> None:
    gid = _gid()
    bad = "http://127.0.0.2:9/api/busi/TransOut"
    r = requests.post(f"{server.url}/submit", json=_saga(gid, bad, f"{busi.url}/TransOutRevert"),
                      timeout=10)
    _refused(r, bad, "Deny: 127.0.0.2/32")
    assert server.status(gid) is None  # nothing stored

    hostport = f"http://127.0.0.1:{BLOCKED}/notify"
    r = requests.get(f"{server.url}/subscribe",
                     params={"topic": "t-" + gid, "url": hostport}, timeout=10)
    _refused(r, hostport, f"Deny: *:{BLOCKED}")

    msg = {"gid": gid, "trans_type": "msg", "query_prepared": hostport,
           "steps": [{"action": f"{busi.url}/TransIn"}], "payloads": ["{}"]}
    _refused(requests.post(f"{server.url}/prepare", json=msg, timeout=10), hostport,
             f"Deny: *:{BLOCKED}")

    tcc = {"gid": gid, "trans_type": "tcc"}
    assert requests.post(f"{server.url}/prepare", json=tcc, timeout=10).status_code == 200
    branch = {"gid": gid, "trans_type": "tcc", "branch_id": "01", "data": "{}",
              "confirm": f"{busi.url}/TransInConfirm", "cancel": bad}
    _refused(requests.post(f"{server.url}/registerBranch", json=branch, timeout=10), bad,
             "Deny: 127.0.0.2/32")

    for meta in ("http://169.254.169.254/latest/meta-data/",
                 "http://metadata.google.internal/computeMetadata/v1/"):
        r = requests.post(f"{server.url}/submit", json=_saga(_gid(), meta, meta), timeout=10)
        _refused(r, meta, "Deny: ")


def test_allowed_urls_still_work(server: ServerProcess, busi: BusiServer) -> None:
    gid = _gid()
    body = _saga(gid, f"{busi.url}/TransOut", f"{busi.url}/TransOutRevert")
    assert requests.post(f"{server.url}/submit", json=body, timeout=10).status_code == 200
    server.wait_status(gid, "succeed")


async def test_grpc_entry_refusal(server: ServerProcess) -> None:
    url = "127.0.0.2:50051/busi.Busi/TransOut"
    steps = f'[{{"action": "{url}", "compensate": "{url}"}}]'
    req = dtmgimp_pb2.DtmRequest(Gid=_gid(), TransType="saga", Steps=steps,
                                 BinPayloads=[b"x"])
    async with grpc.aio.insecure_channel(server.grpc_target) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await dtmgimp_pb2_grpc.DtmStub(ch).Submit(req, timeout=10)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert url in (e.value.details() or "") and "Deny: 127.0.0.2/32" in (e.value.details() or "")


@pytest.mark.parametrize("host", ["localhost", "2130706433", "127.1"])
def test_names_resolving_to_a_denied_address_are_refused_on_connect(
        loopback_denied: ServerProcess, busi: BusiServer, host: str) -> None:
    gid = _gid()
    base = busi.url.replace("127.0.0.1", host)
    body = _saga(gid, f"{base}/TransOut", f"{base}/TransOutRevert")
    # a name passes the entry check (its addresses are not known yet)...
    r = requests.post(f"{loopback_denied.url}/submit", json=body, timeout=10)
    assert r.status_code == 200, r.text
    # ...and is refused when the server resolves it to 127.0.0.1
    eventually(lambda: gid in loopback_denied.log() and "Deny: 127.0.0.1/32" in "\n".join(
        x for x in loopback_denied.log().splitlines() if gid in x), timeout=10)
    assert busi.state.count("TransOut", gid) == 0
    assert loopback_denied.status(gid) == "submitted"


@pytest.fixture
async def grpc_busi() -> AsyncIterator[GrpcBusi]:
    async with GrpcBusi() as b:
        yield b


async def test_grpc_branch_resolving_to_a_denied_address_is_not_dialled(
        loopback_denied: ServerProcess, grpc_busi: GrpcBusi) -> None:
    gid = _gid()
    url = f"localhost:{grpc_busi.port}/busi.Busi/TransOut"
    steps = f'[{{"action": "{url}", "compensate": "{url}"}}]'
    req = dtmgimp_pb2.DtmRequest(Gid=gid, TransType="saga", Steps=steps, BinPayloads=[b""])
    async with grpc.aio.insecure_channel(loopback_denied.grpc_target) as ch:
        await dtmgimp_pb2_grpc.DtmStub(ch).Submit(req, timeout=10)

    async def refused() -> bool:
        lines = [x for x in loopback_denied.log().splitlines() if gid in x]
        return any("Deny: 127.0.0.1/32" in x for x in lines)

    await aeventually(refused, timeout=10)
    assert grpc_busi.calls == []
