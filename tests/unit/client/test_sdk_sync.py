"""The generated blocking twins, against a stdlib HTTP stand-in in a thread."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from dtmx.client import DtmError, Failure, Saga
from dtmx.client.sync import SyncDtmClient, SyncSaga, SyncTcc, tcc_global_transaction


class StandIn(ThreadingHTTPServer):
    calls: list[tuple[str, dict[str, str], Any]]
    answers: dict[str, int]


class Handler(BaseHTTPRequestHandler):
    server: StandIn

    def _answer(self) -> None:
        url = urlparse(self.path)
        name = url.path.rsplit("/", 1)[-1]
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.calls.append((name, query, json.loads(raw) if raw else None))
        status = self.server.answers.get(name, 200)
        out = {"gid": "sync-gid"} if name == "newGid" else {"dtm_result": "SUCCESS"}
        if status == 409:
            out = {"dtm_result": "FAILURE", "message": "nope"}
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def standin() -> Iterator[StandIn]:
    srv = StandIn(("127.0.0.1", 0), Handler)
    srv.calls, srv.answers = [], {}
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: StandIn, path: str = "/api/dtmsvr") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def test_generated_twins_have_docs_and_methods() -> None:
    for name in ("add", "add_branch_order", "enable_concurrent", "set_options", "submit"):
        method = getattr(SyncSaga, name)
        assert method.__doc__ == getattr(Saga, name).__doc__
    assert SyncSaga.__doc__ and "Saga" in SyncSaga.__doc__
    assert hasattr(SyncTcc, "from_branch") and hasattr(SyncTcc, "call_branch")


def test_sync_saga(standin: StandIn) -> None:
    client = SyncDtmClient(_url(standin))
    gid = client.new_gid()
    assert gid == "sync-gid"
    saga = client.saga(gid).add("http://b/a", "http://b/c", {"n": 1})
    assert isinstance(saga, SyncSaga)
    saga.wait_result = True  # attributes reach the async object
    assert saga.add("http://b/a2", "http://b/c2") is not None
    saga.submit()
    body = standin.calls[-1][2]
    assert body["wait_result"] is True and len(body["steps"]) == 2
    standin.answers["submit"] = 409
    with pytest.raises(Failure, match="nope"):
        saga.submit()
    client.close()


def test_sync_tcc_and_callbacks(standin: StandIn) -> None:
    client = SyncDtmClient(_url(standin))
    with client.tcc("t1") as tcc:
        assert isinstance(tcc, SyncTcc)
        tcc.call_branch({"a": 1}, _url(standin, "/busi/try"), "c", "x")
    assert [c[0] for c in standin.calls] == ["prepare", "registerBranch", "try", "submit"]

    standin.calls.clear()

    def busi(tcc: Any) -> str:  # a plain function, handed a SyncTcc, in a worker thread
        assert isinstance(tcc, SyncTcc)
        tcc.call_branch({}, _url(standin, "/busi/try"), "c", "x")
        raise ValueError("rollback please")

    with pytest.raises(ValueError):
        tcc_global_transaction(client, "t2", busi)
    assert [c[0] for c in standin.calls] == ["prepare", "registerBranch", "try", "abort"]
    client.close()


async def test_sync_api_works_inside_a_running_loop(standin: StandIn) -> None:
    asyncio.get_running_loop()
    client = SyncDtmClient(_url(standin))
    assert client.new_gid() == "sync-gid"
    client.close()


def test_sync_unreachable() -> None:
    client = SyncDtmClient("http://127.0.0.1:9/api/dtmsvr", timeout=2)
    with pytest.raises(DtmError):
        client.new_gid()
    client.close()


def test_sync_constructors_and_classmethods() -> None:
    client = SyncDtmClient("http://127.0.0.1:9/api/dtmsvr")
    saga = SyncSaga(client, "g").add("a", "c", {"x": 1})
    assert saga.to_body()["steps"] == [{"action": "a", "compensate": "c"}]
    nested = SyncTcc.from_branch(client, "g", "01")
    assert isinstance(nested, SyncTcc)
    assert nested.ids.new_id() == "0101"
    assert isinstance(nested.client, SyncDtmClient)  # attributes read back as sync twins
