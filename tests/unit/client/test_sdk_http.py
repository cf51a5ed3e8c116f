"""The SDK against a small stand-in DTM server and branch (real HTTP, in this loop)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dtmx.client import DtmClient, DtmError, Failure, Ongoing, Tcc, tcc_global_transaction
from tests.support.util import free_port


@dataclass
class StandIn:
    """Records every call; `answers[path]` = (status, body) overrides the default 200."""

    calls: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        name = request.path.rsplit("/", 1)[-1]
        self.calls.append((name, dict(request.query), body))
        if name in self.answers:
            status, out = self.answers[name]
            return web.json_response(out, status=status)
        if name == "newGid":
            return web.json_response({"gid": "gid-1", "dtm_result": "SUCCESS"})
        if name == "query":
            return web.json_response({"transaction": None, "branches": []})
        return web.json_response({"dtm_result": "SUCCESS"})

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def call(self, name: str) -> tuple[str, dict[str, str], Any]:
        return next(c for c in self.calls if c[0] == name)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/api/dtmsvr"))

    def busi(self, name: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/busi/{name}"))


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
    c = DtmClient(standin.url)
    yield c
    await c.aclose()


async def test_new_gid_and_query(standin: StandIn, client: DtmClient) -> None:
    assert await client.new_gid() == "gid-1"
    assert await client.query("g") is None
    assert standin.call("query")[1] == {"gid": "g"}


async def test_saga_submit_posts_the_body(standin: StandIn, client: DtmClient) -> None:
    saga = client.saga("g1").add("http://b/a", "http://b/c", {"x": 1})
    await saga.submit()
    assert standin.call("submit")[2] == saga.to_body()


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (409, {"dtm_result": "FAILURE", "message": "saga failed"}, Failure),
        (425, {"dtm_result": "ONGOING", "message": "later"}, Ongoing),
        (500, {"message": "boom"}, DtmError),
    ],
)
async def test_submit_errors(
    standin: StandIn, client: DtmClient, status: int, body: dict[str, Any], kind: type
) -> None:
    standin.answers["submit"] = (status, body)
    with pytest.raises(kind) as info:
        await client.saga("g").add("a", "c").submit()
    assert type(info.value) is kind
    assert info.value.message == body["message"]


async def test_unreachable_server_is_a_dtm_error() -> None:
    client = DtmClient(f"http://127.0.0.1:{free_port()}/api/dtmsvr", timeout=2)
    with pytest.raises(DtmError, match="newGid") as info:
        await client.new_gid()
    # a readable cause, not an aiohttp repr
    assert "cannot connect" in info.value.message and "Error(" not in info.value.message
    await client.aclose()


async def test_one_pooled_session(standin: StandIn, client: DtmClient) -> None:
    await client.new_gid()
    http = client.transport.http  # type: ignore[attr-defined]
    first = http.session()
    await client.new_gid()
    assert http.session() is first
    await client.aclose()
    assert await client.new_gid() == "gid-1"  # reconnects after close


async def test_tcc_success(standin: StandIn, client: DtmClient) -> None:
    async with client.tcc("t1") as tcc:
        tcc.branch_headers = {"X-Trace": "7"}
        resp = await tcc.call_branch(
            {"amount": 3}, standin.busi("try"), standin.busi("confirm"), standin.busi("cancel")
        )
        assert resp.status == 200 and resp.json() == {"dtm_result": "SUCCESS"}
        await tcc.call_branch(None, "", standin.busi("confirm2"), standin.busi("cancel2"))
    assert standin.names() == ["prepare", "registerBranch", "try", "registerBranch", "submit"]
    assert standin.call("registerBranch")[2] == {
        "gid": "t1",
        "trans_type": "tcc",
        "branch_id": "01",
        "data": '{"amount":3}',
        "confirm": standin.busi("confirm"),
        "cancel": standin.busi("cancel"),
    }
    _, query, body = standin.call("try")
    assert query == {
        "dtm": standin.url,
        "gid": "t1",
        "trans_type": "tcc",
        "branch_id": "01",
        "op": "try",
    }
    assert body == {"amount": 3}
    assert standin.calls[3][2]["branch_id"] == "02"


async def test_tcc_try_failure_aborts_and_reraises(standin: StandIn, client: DtmClient) -> None:
    standin.answers["try"] = (409, {"dtm_result": "FAILURE", "message": "no stock"})
    with pytest.raises(Failure, match="no stock"):
        async with client.tcc("t2") as tcc:
            await tcc.call_branch({}, standin.busi("try"), "c", "x")
    assert standin.names() == ["prepare", "registerBranch", "try", "abort"]
    assert "no stock" in standin.call("abort")[2]["rollback_reason"]


async def test_tcc_abort_failure_keeps_original_error(
    standin: StandIn, client: DtmClient
) -> None:
    standin.answers["abort"] = (500, {"message": "down"})
    with pytest.raises(KeyError) as info:
        async with client.tcc("t3"):
            raise KeyError("mine")
    assert any("abort" in n for n in info.value.__notes__)


async def test_nested_tcc_registers_sub_branches(standin: StandIn, client: DtmClient) -> None:
    inner = Tcc.from_branch(client, "t4", "01")
    await inner.call_branch({}, standin.busi("try"), "c", "x")
    await inner.call_branch({}, standin.busi("try"), "c", "x")
    ids = [c[2]["branch_id"] for c in standin.calls if c[0] == "registerBranch"]
    assert ids == ["0101", "0102"]
    assert "prepare" not in standin.names()
    with pytest.raises(DtmError, match="nested"):
        async with inner:
            pass


async def test_tcc_global_transaction(standin: StandIn, client: DtmClient) -> None:
    async def busi(tcc: Tcc) -> str:
        await tcc.call_branch({}, standin.busi("try"), "c", "x")
        return "done"

    assert await tcc_global_transaction(client, "t5", busi) == "done"
    assert standin.names() == ["prepare", "registerBranch", "try", "submit"]


async def test_msg_prepare_and_submit(standin: StandIn, client: DtmClient) -> None:
    msg = client.msg("m1").add("http://b/in", {"a": 1})
    await msg.prepare(standin.busi("qp"))
    await msg.submit()
    assert standin.call("prepare")[2]["query_prepared"] == standin.busi("qp")
    assert standin.call("submit")[2] == msg.to_body()


@pytest.mark.parametrize(
    ("busi_error", "qp_status", "expected"),
    [
        (None, None, ["prepare", "submit"]),
        (Failure("no"), None, ["prepare", "abort"]),
        (RuntimeError("?"), 200, ["prepare", "qp", "submit"]),
        (RuntimeError("?"), 409, ["prepare", "qp", "abort"]),
        (RuntimeError("?"), 425, ["prepare", "qp"]),
        (RuntimeError("?"), 500, ["prepare", "qp"]),
    ],
)
async def test_do_and_submit(
    standin: StandIn,
    client: DtmClient,
    busi_error: Exception | None,
    qp_status: int | None,
    expected: list[str],
) -> None:
    seen: list[Any] = []
    if qp_status is not None:
        standin.answers["qp"] = (qp_status, {})

    async def busi(barrier: Any) -> None:
        seen.append(barrier)
        if busi_error is not None:
            raise busi_error

    msg = client.msg("m2").add("http://b/in", {})
    if busi_error is None:
        await msg.do_and_submit(standin.busi("qp"), busi)
    else:
        with pytest.raises(type(busi_error)):
            await msg.do_and_submit(standin.busi("qp"), busi)
    assert standin.names() == expected
    (barrier,) = seen
    assert (barrier.trans_type, barrier.gid, barrier.branch_id, barrier.op) == (
        "msg",
        "m2",
        "00",
        "msg",
    )
    if qp_status is not None:
        assert standin.call("qp")[1] == {
            "dtm": standin.url,
            "gid": "m2",
            "trans_type": "msg",
            "branch_id": "00",
            "op": "msg",
        }
