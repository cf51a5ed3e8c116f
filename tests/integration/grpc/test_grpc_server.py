"""End to end over gRPC: a real `dtmx serve` driven through OUR dtmgimp stubs, calling an
in-process gRPC busi server.

The busi server runs on this test's event loop, so every wait here is async (the server's
HTTP query is polled in a thread): a blocking wait would stop busi from answering.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dtmx.api.proto import dtmgimp_pb2, dtmgimp_pb2_grpc
from dtmx.client._errors import Failure
from dtmx.client.grpc import GrpcTransport
from tests.support.grpc_busi import GrpcBusi
from tests.support.proto import busi_pb2
from tests.support.server import ServerProcess
from tests.support.util import aeventually

ABORTED = grpc.StatusCode.ABORTED
ONGOING = grpc.StatusCode.FAILED_PRECONDITION


def _gid() -> str:
    return "grpc-e2e-" + uuid.uuid4().hex


def _req(amount: int = 30) -> bytes:
    return busi_pb2.BusiReq(Amount=amount, UserID=1).SerializeToString()


async def _query(server: ServerProcess, gid: str) -> dict[str, Any]:
    return await asyncio.to_thread(server.query, gid)


async def _wait(
    server: ServerProcess, gid: str, status: str, timeout: float = 10
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        q = await _query(server, gid)
        t = q.get("transaction")
        return q if t and t["status"] == status else None

    try:
        return await aeventually(check, timeout=timeout, interval=0.05)
    except AssertionError:
        raise AssertionError(f"{gid} not {status}: {await _query(server, gid)}") from None


def _saga(busi: GrpcBusi, gid: str, **kw: Any) -> dtmgimp_pb2.DtmRequest:
    steps = [
        {"action": busi.url("TransOut"), "compensate": busi.url("TransOutRevert")},
        {"action": busi.url("TransIn"), "compensate": busi.url("TransInRevert")},
    ]
    return dtmgimp_pb2.DtmRequest(Gid=gid, TransType="saga", Steps=orjson.dumps(steps).decode(),
                                  BinPayloads=[_req(30), _req(31)], **kw)


async def test_new_gid_and_health(server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub) -> None:
    a = (await dtm.NewGid(empty_pb2.Empty())).Gid
    b = (await dtm.NewGid(empty_pb2.Empty())).Gid
    assert a and b and a != b
    async with grpc.aio.insecure_channel(server.grpc_target) as ch:
        r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert r.status == health_pb2.HealthCheckResponse.SERVING


async def test_saga_normal(server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub,
                           busi: GrpcBusi) -> None:
    gid = _gid()
    await dtm.Submit(_saga(busi, gid))
    q = await _wait(server, gid, "succeed")
    assert busi.names() == ["TransOut", "TransIn"]
    out, in_ = busi.calls
    assert out.request().Amount == 30 and in_.request().Amount == 31
    md = in_.metadata
    assert (md["dtm-gid"], md["dtm-trans_type"], md["dtm-branch_id"], md["dtm-op"]) == (
        gid, "saga", "02", "action")
    assert md["dtm-dtm"].endswith(f":{server.grpc_port}")
    assert q["transaction"]["protocol"] == "grpc"
    assert {(b["branch_id"], b["op"], b["status"]) for b in q["branches"]} >= {
        ("01", "action", "succeed"), ("02", "action", "succeed")}


async def test_saga_rollback(server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub,
                             busi: GrpcBusi) -> None:
    busi.set_result("TransIn", ABORTED, message="not enough money")
    gid = _gid()
    await dtm.Submit(_saga(busi, gid))
    q = await _wait(server, gid, "failed")
    assert busi.names() == ["TransOut", "TransIn", "TransInRevert", "TransOutRevert"]
    assert busi.calls[2].metadata["dtm-op"] == "compensate"
    assert "not enough money" in (q["transaction"].get("rollback_reason") or "")


async def test_saga_retries_errors_and_ongoing(server: ServerProcess,
                                               dtm: dtmgimp_pb2_grpc.DtmStub,
                                               busi: GrpcBusi) -> None:
    busi.set_result("TransOut", grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK)
    busi.set_result("TransIn", ONGOING, grpc.StatusCode.OK)
    gid = _gid()
    await dtm.Submit(_saga(busi, gid))
    await _wait(server, gid, "succeed")
    assert busi.names() == ["TransOut", "TransOut", "TransIn", "TransIn"]


async def test_saga_concurrent(server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub,
                               busi: GrpcBusi) -> None:
    busi.set_delay("TransOut", 0.3)
    gid = _gid()
    custom = orjson.dumps({"concurrent": True}).decode()
    await dtm.Submit(_saga(busi, gid, CustomedData=custom))
    await _wait(server, gid, "succeed")
    out, in_ = busi.calls_of("TransOut")[0], busi.calls_of("TransIn")[0]
    assert in_.at < out.at + 0.3  # TransIn did not wait for the slow TransOut

    busi.reset()
    busi.set_delay("TransOut", 0.2)
    gid = _gid()
    custom = orjson.dumps({"concurrent": True, "orders": {"1": [0]}}).decode()
    await dtm.Submit(_saga(busi, gid, CustomedData=custom))
    await _wait(server, gid, "succeed")
    assert busi.names() == ["TransOut", "TransIn"]


async def test_saga_branch_headers(server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub,
                                   busi: GrpcBusi) -> None:
    gid = _gid()
    opts = dtmgimp_pb2.DtmTransOptions(BranchHeaders={"x-tenant": "t1", "Authorization": "b"})
    await dtm.Submit(_saga(busi, gid, TransOptions=opts))
    await _wait(server, gid, "succeed")
    for c in busi.calls:
        assert c.metadata["x-tenant"] == "t1" and c.metadata["authorization"] == "b"


async def test_saga_wait_result(server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub,
                                busi: GrpcBusi) -> None:
    gid = _gid()
    await dtm.Submit(_saga(busi, gid, TransOptions=dtmgimp_pb2.DtmTransOptions(WaitResult=True)))
    assert (await _query(server, gid))["transaction"]["status"] == "succeed"
    busi.set_result("TransIn", ABORTED)
    gid = _gid()
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await dtm.Submit(_saga(busi, gid,
                               TransOptions=dtmgimp_pb2.DtmTransOptions(WaitResult=True)))
    assert ei.value.code() == ABORTED
    await _wait(server, gid, "failed")


async def test_saga_empty_urls(server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub,
                               busi: GrpcBusi) -> None:
    gid = _gid()
    steps = [{"action": "", "compensate": ""}, {"action": busi.url("TransIn"), "compensate": ""}]
    await dtm.Submit(dtmgimp_pb2.DtmRequest(Gid=gid, TransType="saga",
                                            Steps=orjson.dumps(steps).decode(),
                                            BinPayloads=[b"", _req()]))
    await _wait(server, gid, "succeed")
    assert busi.names() == ["TransIn"]


async def test_submit_finished_saga_again_is_aborted(server: ServerProcess,
                                                     dtm: dtmgimp_pb2_grpc.DtmStub,
                                                     busi: GrpcBusi) -> None:
    busi.set_result("TransOut", ABORTED)
    gid = _gid()
    await dtm.Submit(_saga(busi, gid))
    await _wait(server, gid, "failed")
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await dtm.Submit(_saga(busi, gid))
    assert ei.value.code() == ABORTED


async def _tcc_branch(t: GrpcTransport, busi: GrpcBusi, gid: str, bid: str, who: str) -> None:
    await t.register_branch({
        "gid": gid, "trans_type": "tcc", "branch_id": bid, "data": _req(int(bid)),  # type: ignore[dict-item]
        "confirm": busi.url(f"{who}Confirm"), "cancel": busi.url(f"{who}Revert"),
    })


async def test_tcc_normal(server: ServerProcess, busi: GrpcBusi) -> None:
    t = GrpcTransport(server.grpc_target)
    try:
        gid = await t.new_gid()
        await t.prepare({"gid": gid, "trans_type": "tcc"})
        await _tcc_branch(t, busi, gid, "01", "TransOut")
        await _tcc_branch(t, busi, gid, "02", "TransIn")
        await t.submit({"gid": gid, "trans_type": "tcc"})
        await _wait(server, gid, "succeed")
        assert sorted(busi.names()) == ["TransInConfirm", "TransOutConfirm"]
        confirm = busi.calls_of("TransInConfirm")[0]
        assert confirm.request().Amount == 2  # the registered BusiPayload
        assert (confirm.metadata["dtm-op"], confirm.metadata["dtm-branch_id"]) == ("confirm", "02")
    finally:
        await t.close()


async def test_tcc_rollback(server: ServerProcess, busi: GrpcBusi) -> None:
    t = GrpcTransport(server.grpc_target)
    try:
        gid = _gid()
        await t.prepare({"gid": gid, "trans_type": "tcc"})
        await _tcc_branch(t, busi, gid, "01", "TransOut")
        await _tcc_branch(t, busi, gid, "02", "TransIn")
        await t.abort({"gid": gid, "trans_type": "tcc", "rollback_reason": "try failed"})
        await _wait(server, gid, "failed")
        assert busi.names() == ["TransInRevert", "TransOutRevert"]  # reverse registration
        assert busi.calls[0].metadata["dtm-op"] == "cancel"
        # a finished transaction takes no more branches
        with pytest.raises(Failure):
            await _tcc_branch(t, busi, gid, "03", "TransIn")
    finally:
        await t.close()


async def test_msg_query_prepared(server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub,
                                  busi: GrpcBusi) -> None:
    # prepared and never submitted: after TimeoutToFail (1 s here) the server asks busi
    gid = _gid()
    steps = orjson.dumps([{"action": busi.url("TransIn")}]).decode()
    await dtm.Prepare(dtmgimp_pb2.DtmRequest(Gid=gid, TransType="msg", Steps=steps,
                                             BinPayloads=[_req(7)],
                                             QueryPrepared=busi.url("QueryPrepared")))
    await _wait(server, gid, "succeed", timeout=15)
    assert busi.names() == ["QueryPrepared", "TransIn"]
    qp = busi.calls[0].metadata
    assert (qp["dtm-gid"], qp["dtm-branch_id"], qp["dtm-op"]) == (gid, "00", "msg")
    assert busi.calls[1].request().Amount == 7

    busi.reset()
    busi.set_result("QueryPrepared", ABORTED)
    gid = _gid()
    await dtm.Prepare(dtmgimp_pb2.DtmRequest(Gid=gid, TransType="msg", Steps=steps,
                                             BinPayloads=[_req(7)],
                                             QueryPrepared=busi.url("QueryPrepared")))
    await _wait(server, gid, "failed", timeout=15)
    assert busi.names() == ["QueryPrepared"]


async def test_msg_submit(server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub,
                          busi: GrpcBusi) -> None:
    gid = _gid()
    busi.set_result("TransIn", ABORTED, grpc.StatusCode.OK)  # msg actions retry even failures
    steps = orjson.dumps([{"action": busi.url("TransIn")}]).decode()
    req = dtmgimp_pb2.DtmRequest(Gid=gid, TransType="msg", Steps=steps, BinPayloads=[_req()],
                                 QueryPrepared=busi.url("QueryPrepared"))
    await dtm.Prepare(req)
    await dtm.Submit(req)
    await _wait(server, gid, "succeed")
    assert busi.names() == ["TransIn", "TransIn"]


@pytest.mark.parametrize(
    "req",
    [
        dtmgimp_pb2.DtmRequest(TransType="saga"),
        dtmgimp_pb2.DtmRequest(Gid="g-" + uuid.uuid4().hex, TransType="nosuch"),
        dtmgimp_pb2.DtmRequest(Gid="g-" + uuid.uuid4().hex, TransType="saga", Steps="{"),
    ],
)
async def test_bad_requests(dtm: dtmgimp_pb2_grpc.DtmStub, req: dtmgimp_pb2.DtmRequest) -> None:
    for method in (dtm.Submit, dtm.Prepare, dtm.Abort):
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await method(req)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value.details()


# --- hostile input (issue 10) --------------------------------------------------------------


async def test_malformed_protobuf_is_invalid_argument_with_a_plain_message(
        server: ServerProcess) -> None:
    async with grpc.aio.insecure_channel(server.grpc_target) as ch:
        raw = ch.unary_unary("/dtmgimp.Dtm/Submit", request_serializer=lambda b: b,
                             response_deserializer=lambda b: b)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await raw(b"\xff\xff\xff\xff\x0f\x01garbage")
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == "the request is not a valid dtmgimp.DtmRequest protobuf message"


async def test_request_timeout_of_2_63_is_invalid_argument_and_not_stored(
        server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub) -> None:
    gid = _gid()
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await dtm.Prepare(dtmgimp_pb2.DtmRequest(
            Gid=gid, TransType="tcc",
            TransOptions=dtmgimp_pb2.DtmTransOptions(RequestTimeout=2**63 - 1)))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details() == (
        "RequestTimeout must be an integer in 0..2147483647, not 9223372036854775807")
    assert (await _query(server, gid))["transaction"] is None


class _SlowAnswers:
    """A TCP proxy to the server's gRPC port that can hold the server's bytes back for
    `delay` seconds (the client's bytes pass at once)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._upstream = (host, int(port))
        self.delay = 0.0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection(*self._upstream)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, slow: bool) -> None:
            while data := await r.read(65536):
                if slow and self.delay:
                    await asyncio.sleep(self.delay)
                w.write(data)
                await w.drain()
            w.close()

        for t in (asyncio.create_task(pipe(cr, uw, False)),
                  asyncio.create_task(pipe(ur, cw, True))):
            self._tasks.add(t)


async def test_a_call_past_its_deadline_leaves_the_state_a_retry_would(
        server: ServerProcess) -> None:
    """Both cases of a prepare whose client deadline expires, each forced:
    1. it expires while the call waits for the store (the test holds SQLite's write lock):
       DEADLINE_EXCEEDED and nothing is stored, even once the lock is free;
    2. it expires after the store write (the answer is held back on the way): the client
       sees DEADLINE_EXCEEDED, yet the TCC is stored, prepared with no branches, which is
       exactly the state the retry (prepare is idempotent on a gid) produces.
    (A call arriving after its deadline is refused before any write: _before_write, in
    tests/unit/test_grpc_methods.py.)"""
    req = dtmgimp_pb2.DtmRequest(Gid=_gid(), TransType="tcc")
    lock = sqlite3.connect(server.conf["Store"]["Db"], isolation_level=None)
    try:
        async with grpc.aio.insecure_channel(server.grpc_target) as ch:
            dtm = dtmgimp_pb2_grpc.DtmStub(ch)
            await dtm.Prepare(dtmgimp_pb2.DtmRequest(Gid=_gid(), TransType="tcc"))  # connect
            lock.execute("BEGIN IMMEDIATE")
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await dtm.Prepare(req, timeout=0.3)
            assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            lock.execute("ROLLBACK")
            # the server retries a locked write every 50 ms at most: a call still alive
            # would have stored it well within a second
            for _ in range(20):
                assert (await _query(server, req.Gid))["transaction"] is None
                await asyncio.sleep(0.05)
            await dtm.Prepare(req)  # the retry stores it
            q = await _query(server, req.Gid)
            assert q["transaction"]["status"] == "prepared" and q["branches"] == []
    finally:
        lock.close()

    req = dtmgimp_pb2.DtmRequest(Gid=_gid(), TransType="tcc")
    proxy = _SlowAnswers(server.grpc_target)
    async with proxy as target, grpc.aio.insecure_channel(target) as ch:
        dtm = dtmgimp_pb2_grpc.DtmStub(ch)
        await dtm.Prepare(dtmgimp_pb2.DtmRequest(Gid=_gid(), TransType="tcc"))  # connect
        proxy.delay = 1.0
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await dtm.Prepare(req, timeout=0.3)
        assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        stored = await _query(server, req.Gid)  # stored although the client gave up
        assert stored["transaction"]["status"] == "prepared" and stored["branches"] == []
        proxy.delay = 0.0
    async with grpc.aio.insecure_channel(server.grpc_target) as ch:
        await dtmgimp_pb2_grpc.DtmStub(ch).Prepare(req)  # the retry: accepted, no change
    again = await _query(server, req.Gid)
    assert again["transaction"] == stored["transaction"] and again["branches"] == []


async def test_requests_are_bounded_by_max_body_bytes_not_grpcs_4_mib(
        server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub) -> None:
    """Limits.MaxBodyBytes (16 MiB) bounds a gRPC request as it bounds an HTTP body: 5 MiB
    (over gRPC's own 4 MiB default) is served, more than 16 MiB is RESOURCE_EXHAUSTED with
    gRPC's plain message, as DTM's server answers, and nothing is stored."""
    gid = _gid()
    steps = orjson.dumps([{"action": "", "compensate": ""}]).decode()  # no calls
    await dtm.Submit(dtmgimp_pb2.DtmRequest(Gid=gid, TransType="saga", Steps=steps,
                                            BinPayloads=[b"x" * (5 * 1024 * 1024)]))
    await _wait(server, gid, "succeed")
    big = _gid()
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await dtm.Submit(dtmgimp_pb2.DtmRequest(Gid=big, TransType="saga", Steps=steps,
                                                BinPayloads=[b"x" * (16 * 1024 * 1024)]))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert re.fullmatch(r"SERVER: Received message larger than max \(\d+ vs\. 16777216\)",
                        ei.value.details() or ""), ei.value.details()
    assert (await _query(server, big))["transaction"] is None


async def test_a_branch_reply_over_max_branch_response_bytes_is_a_branch_error(
        server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub, busi: GrpcBusi) -> None:
    """A gRPC branch answering more than Limits.MaxBranchResponseBytes (1 MiB) fails the
    call with a reason naming the cap; the saga stays submitted and is retried."""
    gid = _gid()
    busi.set_reply("TransOut", b"\0" * (1024 * 1024 + 1))
    await dtm.Submit(_saga(busi, gid))
    reason = "ResponseTooLarge: branch response larger than 1048576 bytes (1048577 bytes)"

    async def retried_with_reason() -> bool:
        return len(busi.calls_of("TransOut")) >= 2 and reason in server.log()

    await aeventually(retried_with_reason, timeout=10)
    q = await _query(server, gid)
    assert q["transaction"]["status"] == "submitted"
    assert busi.calls_of("TransIn") == []
    busi.set_reply("TransOut", b"\0" * (1024 * 1024))  # at the cap: the saga goes on
    await _wait(server, gid, "succeed")
