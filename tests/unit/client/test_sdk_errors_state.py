"""Errors users can branch on, typed query results, and the server's headers/token.

Against a small stand-in DTM server over real HTTP (the wire contract's answers); the same
paths against the real server are in tests/integration/sdk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dtmx.client import (
    DtmClient,
    DtmError,
    Failure,
    Ongoing,
    Op,
    Rejected,
    Status,
    StillRunning,
    TimedOut,
    TransactionFailed,
    TransactionState,
    TransType,
)
from tests.support.util import free_port


class StandIn:
    def __init__(self) -> None:
        self.answer: tuple[int, Any] = (200, {"dtm_result": "SUCCESS"})
        self.delay = 0.0
        self.headers: dict[str, dict[str, str]] = {}
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[-1]
        self.headers[name] = dict(request.headers)
        await asyncio.sleep(self.delay)
        if name == "try":
            return web.json_response({"dtm_result": "SUCCESS"})
        status, body = self.answer
        return web.json_response(body, status=status)

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    s = StandIn()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", s.handle)
    s.server = TestServer(app, port=free_port())
    await s.server.start_server()
    yield s
    await s.server.close()


@pytest.fixture
async def client(standin: StandIn) -> AsyncIterator[DtmClient]:
    c = DtmClient(standin.url("/api/dtmsvr"), timeout=2)
    yield c
    await c.aclose()


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_refused_request_is_rejected_with_status_and_message(
    standin: StandIn, client: DtmClient, status: int
) -> None:
    standin.answer = (status, {"message": "gid is required"})
    with pytest.raises(Rejected) as info:
        await client.saga("g").add("http://a", "http://c").submit()
    e = info.value
    assert (e.status, e.message, e.grpc_code) == (status, "gid is required", None)
    assert not isinstance(e, Failure | Ongoing)


@pytest.mark.parametrize("word", ["submitted", "aborting", "prepared"])
@pytest.mark.parametrize("http_status", [409, 500])
async def test_wait_result_still_running(
    standin: StandIn, client: DtmClient, word: str, http_status: int
) -> None:
    msg = f"wait result not return success: {word}"
    standin.answer = (http_status, {"dtm_result": "FAILURE", "message": msg})
    saga = client.saga("g1").add("http://a", "http://c")
    saga.wait_result = True
    with pytest.raises(StillRunning) as info:
        await saga.submit()
    e = info.value
    assert (e.gid, e.state, e.status, e.message) == ("g1", Status(word), http_status, msg)
    assert isinstance(e, Ongoing)


async def test_wait_result_failed(standin: StandIn, client: DtmClient) -> None:
    standin.answer = (409, {"dtm_result": "FAILURE", "message": "TransIn refused: no funds"})
    saga = client.saga("g2").add("http://a", "http://c").set_options(wait_result=True)
    with pytest.raises(TransactionFailed) as info:
        await saga.submit()
    assert (info.value.gid, info.value.message) == ("g2", "TransIn refused: no funds")
    assert isinstance(info.value, Failure)


async def test_without_wait_result_a_failure_stays_a_failure(
    standin: StandIn, client: DtmClient
) -> None:
    standin.answer = (409, {"dtm_result": "FAILURE", "message": "gid exists as a tcc"})
    with pytest.raises(Failure) as info:
        await client.saga("g").add("http://a", "http://c").submit()
    assert type(info.value) is Failure


async def test_timed_out(standin: StandIn) -> None:
    standin.delay = 1.0
    async with DtmClient(standin.url("/api/dtmsvr"), timeout=0.2) as c:
        with pytest.raises(TimedOut) as info:
            await c.new_gid()
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, DtmError)
    assert "no answer within 0.2 s" in info.value.message


async def test_token_and_headers_go_to_the_server_not_to_branches(standin: StandIn) -> None:
    secret = "s3cret-token"
    async with DtmClient(
        standin.url("/api/dtmsvr"), token=secret, headers={"X-Tenant": "a"}
    ) as c, c.tcc("t1") as tcc:
        await tcc.call_branch({}, standin.url("/busi/try"), "http://c", "http://x")
    for call in ("prepare", "registerBranch", "submit"):
        assert standin.headers[call]["Authorization"] == f"Bearer {secret}"
        assert standin.headers[call]["X-Tenant"] == "a"
    assert "Authorization" not in standin.headers["try"]
    assert "X-Tenant" not in standin.headers["try"]


async def test_token_never_in_an_error(standin: StandIn) -> None:
    standin.answer = (401, {"message": "missing or bad token"})
    async with DtmClient(standin.url("/api/dtmsvr"), token="s3cret-token") as c:
        with pytest.raises(Rejected) as info:
            await c.saga("g").add("http://a", "http://c").submit()
    assert "s3cret" not in str(info.value) and "s3cret" not in repr(info.value.__dict__)


def test_client_needs_a_server_or_a_transport() -> None:
    with pytest.raises(ValueError, match="transport"):
        DtmClient()


async def test_query_is_typed_and_keeps_the_dict(standin: StandIn, client: DtmClient) -> None:
    raw = {
        "transaction": {
            "id": 1, "gid": "g", "trans_type": "saga", "status": "failed",
            "rollback_reason": "no funds", "protocol": "http",
        },
        "branches": [
            {"branch_id": "01", "op": "compensate", "status": "succeed", "url": "http://c",
             "data": "{}", "bin_data": "e30="},
            {"branch_id": "01", "op": "action", "status": "failed", "url": "http://a"},
        ],
    }
    standin.answer = (200, raw)
    state = await client.query("g")
    assert isinstance(state, TransactionState)
    assert (state.gid, state.trans_type, state.status) == ("g", TransType.SAGA, Status.FAILED)
    assert state.finished and state.rollback_reason == "no funds"
    assert [(b.op, b.status) for b in state.branches] == [
        (Op.COMPENSATE, Status.SUCCEED), (Op.ACTION, Status.FAILED)
    ]
    assert state.branches[0].raw["bin_data"] == "e30="
    assert state.raw == raw


def test_unknown_words_stay_text() -> None:
    state = TransactionState.from_json(
        {"transaction": {"gid": "g", "trans_type": "future", "status": "paused"}}
    )
    assert state is not None and (state.trans_type, state.status) == ("future", "paused")
    assert not state.finished
