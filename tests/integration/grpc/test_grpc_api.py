"""The gRPC adapter in-process: a real grpc.aio server over a recording Service.

These pin the adapter's own job (conversion, validation, error mapping, health, reflection)
without a store; end-to-end behaviour against `dtmx serve` is in test_grpc_server.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dtmx.api.grpc_api import start_grpc_server
from dtmx.api.proto import dtmgimp_pb2, dtmgimp_pb2_grpc
from dtmx.client._errors import DtmError, Failure, Ongoing
from dtmx.client.grpc import GrpcTransport
from dtmx.core.models import Branch, Op, Protocol, Status, Transaction, TransType
from dtmx.core.request import Registration, TransRequest
from dtmx.errors import ConfigError, StoreUnavailable
from dtmx.errors import Failure as SFailure
from dtmx.errors import Ongoing as SOngoing
from dtmx.service import Service
from tests.support.util import free_port


class RecordingService(Service):
    """Records what the adapter hands over; raises `self.error` when set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.error: BaseException | None = None

    def _rec(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if self.error is not None:
            raise self.error

    async def new_gid(self) -> str:
        self._rec("new_gid", None)
        return "gid-from-service"

    async def prepare(self, req: TransRequest) -> None:
        self._rec("prepare", req)

    async def submit(self, req: TransRequest) -> None:
        self._rec("submit", req)

    async def abort(self, req: TransRequest) -> None:
        self._rec("abort", req)

    async def register_branch(self, reg: Registration) -> None:
        self._rec("register_branch", reg)

    async def prepare_workflow(self, req: TransRequest) -> tuple[Transaction, list[Branch]]:
        self._rec("prepare_workflow", req)
        t = Transaction(gid=req.gid, trans_type=TransType.WORKFLOW, status=Status.PREPARED)
        b = Branch(gid=req.gid, branch_id="01", op=Op.ACTION, url="", data=b"\x01\x02",
                   status=Status.SUCCEED)
        return t, [b]

    async def subscribe(self, topic: str, url: str, remark: str) -> None:
        self._rec("subscribe", (topic, url, remark))

    async def unsubscribe(self, topic: str, url: str) -> None:
        self._rec("unsubscribe", (topic, url))

    async def delete_topic(self, topic: str) -> None:
        self._rec("delete_topic", topic)


@pytest.fixture
async def svc() -> RecordingService:
    return RecordingService()


@pytest.fixture
async def target(svc: RecordingService) -> AsyncIterator[str]:
    port = free_port()
    server = await start_grpc_server(svc, "127.0.0.1", port)
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture
async def channel(target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(target) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> dtmgimp_pb2_grpc.DtmStub:
    return dtmgimp_pb2_grpc.DtmStub(channel)


def _gid() -> str:
    return "grpc-" + uuid.uuid4().hex


async def test_new_gid(stub: dtmgimp_pb2_grpc.DtmStub) -> None:
    reply = await stub.NewGid(empty_pb2.Empty())
    assert reply.Gid == "gid-from-service"


async def test_submit_converts_every_field(
    stub: dtmgimp_pb2_grpc.DtmStub, svc: RecordingService
) -> None:
    gid = _gid()
    await stub.Submit(dtmgimp_pb2.DtmRequest(
        Gid=gid,
        TransType="saga",
        TransOptions=dtmgimp_pb2.DtmTransOptions(
            WaitResult=True, TimeoutToFail=7, RetryInterval=3, RequestTimeout=2, RetryLimit=5,
            BranchHeaders={"x-a": "1"},
        ),
        CustomedData='{"concurrent":true}',
        BinPayloads=[b"\x08\x1e", b""],
        QueryPrepared="h:1/p.S/Q",
        Steps='[{"action":"h:1/p.S/A","compensate":"h:1/p.S/C"},{"action":"h:1/p.S/B"}]',
        ReqExtra={"status": "x"},
        RollbackReason="why",
    ))
    [(name, req)] = svc.calls
    assert name == "submit"
    assert isinstance(req, TransRequest)
    assert req.gid == gid and req.trans_type is TransType.SAGA
    assert req.protocol is Protocol.GRPC
    assert req.steps == [{"action": "h:1/p.S/A", "compensate": "h:1/p.S/C"},
                         {"action": "h:1/p.S/B"}]
    assert req.payloads == [b"\x08\x1e", b""]
    assert req.custom_data == '{"concurrent":true}'
    assert req.query_prepared == "h:1/p.S/Q"
    assert req.rollback_reason == "why" and req.req_extra == {"status": "x"}
    o = req.options
    assert (o.wait_result, o.timeout_to_fail, o.retry_interval, o.request_timeout,
            o.retry_limit, o.branch_headers) == (True, 7, 3, 2, 5, {"x-a": "1"})


async def test_prepare_abort_defaults(
    stub: dtmgimp_pb2_grpc.DtmStub, svc: RecordingService
) -> None:
    gid = _gid()
    await stub.Prepare(dtmgimp_pb2.DtmRequest(Gid=gid, TransType="tcc", Steps="null"))
    await stub.Abort(dtmgimp_pb2.DtmRequest(Gid=gid, TransType="tcc"))
    assert [n for n, _ in svc.calls] == ["prepare", "abort"]
    req = svc.calls[0][1]
    assert req.steps == [] and req.payloads == [] and req.options.wait_result is False


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (dtmgimp_pb2.DtmRequest(TransType="saga"), "gid"),
        (dtmgimp_pb2.DtmRequest(Gid="a b", TransType="saga"), "gid"),
        (dtmgimp_pb2.DtmRequest(Gid="g" * 129, TransType="saga"), "gid"),
        (dtmgimp_pb2.DtmRequest(Gid="g1", TransType="nosuch"), "trans_type"),
        (dtmgimp_pb2.DtmRequest(Gid="g1"), "trans_type"),
        (dtmgimp_pb2.DtmRequest(Gid="g1", TransType="saga", Steps="{bad"), "Steps"),
        (dtmgimp_pb2.DtmRequest(Gid="g1", TransType="saga", Steps='{"a":1}'), "Steps"),
        (dtmgimp_pb2.DtmRequest(Gid="g1", TransType="saga", Steps='[{"action":1}]'), "Steps"),
        (dtmgimp_pb2.DtmRequest(Gid="g1", TransType="saga", TransOptions=dtmgimp_pb2.
                                DtmTransOptions(TimeoutToFail=-1)), "TimeoutToFail"),
    ],
)
async def test_bad_requests(
    stub: dtmgimp_pb2_grpc.DtmStub, svc: RecordingService, request_: Any, needle: str
) -> None:
    for method in (stub.Submit, stub.Prepare, stub.Abort, stub.PrepareWorkflow):
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await method(request_)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert needle in (ei.value.details() or "")
    assert svc.calls == []


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (SFailure("already failed"), grpc.StatusCode.ABORTED, "already failed"),
        (SOngoing(), grpc.StatusCode.FAILED_PRECONDITION, "The transaction is still in progress."),
        (StoreUnavailable(), grpc.StatusCode.UNAVAILABLE, "The store cannot be reached."),
        (RuntimeError("secret dsn"), grpc.StatusCode.INTERNAL, "internal server error"),
        (NotImplementedError(), grpc.StatusCode.UNIMPLEMENTED, "not implemented by this server"),
    ],
)
async def test_error_mapping(
    stub: dtmgimp_pb2_grpc.DtmStub, svc: RecordingService, error: BaseException,
    code: grpc.StatusCode, message: str,
) -> None:
    svc.error = error
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await stub.Submit(dtmgimp_pb2.DtmRequest(Gid=_gid(), TransType="tcc"))
    assert ei.value.code() == code
    assert ei.value.details() == message


async def test_register_branch_map(stub: dtmgimp_pb2_grpc.DtmStub, svc: RecordingService) -> None:
    gid = _gid()
    await stub.RegisterBranch(dtmgimp_pb2.DtmBranchRequest(
        Gid=gid, TransType="tcc", BranchID="01", BusiPayload=b"\x00\xff",
        Data={"confirm": "h:1/p.S/Confirm", "cancel": "h:1/p.S/Cancel", "gid": "spoof"},
    ))
    await stub.RegisterBranch(dtmgimp_pb2.DtmBranchRequest(
        Gid=gid, TransType="xa", BranchID="02", Op="action", Data={"url": "h:1/p.S/Xa"},
    ))
    (_, tcc), (_, xa) = svc.calls[:2]
    assert tcc == Registration(gid, TransType.TCC, "01", b"\x00\xff",
                               {"confirm": "h:1/p.S/Confirm", "cancel": "h:1/p.S/Cancel",
                                "gid": gid, "trans_type": "tcc", "branch_id": "01"})
    assert (xa.trans_type, xa.branch_id, xa.payload, xa.urls["url"], xa.urls["op"]) == (
        TransType.XA, "02", b"", "h:1/p.S/Xa", "action")
    # a workflow step: op and status from Data (as DTM's Go client sends them), or Op
    await stub.RegisterBranch(dtmgimp_pb2.DtmBranchRequest(
        Gid=gid, TransType="workflow", BranchID="03", Data={"status": "succeed", "op": "commit"},
        BusiPayload=b"\x00r",
    ))
    wf = svc.calls[-1][1]
    assert wf == Registration(gid, TransType.WORKFLOW, "03", b"\x00r", {}, Op.COMMIT,
                              Status.SUCCEED)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await stub.RegisterBranch(dtmgimp_pb2.DtmBranchRequest(
            Gid=gid, TransType="workflow", BranchID="03", Op="action", Data={"status": "??"},
        ))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "status must be succeed or failed" in (ei.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await stub.RegisterBranch(dtmgimp_pb2.DtmBranchRequest(TransType="tcc", BranchID="01"))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_topics(stub: dtmgimp_pb2_grpc.DtmStub, svc: RecordingService) -> None:
    await stub.Subscribe(dtmgimp_pb2.DtmTopicRequest(Topic="t", URL="h:1/p.S/M", Remark="r"))
    await stub.Unsubscribe(dtmgimp_pb2.DtmTopicRequest(Topic="t", URL="h:1/p.S/M"))
    await stub.DeleteTopic(dtmgimp_pb2.DtmTopicRequest(Topic="t"))
    assert svc.calls == [("subscribe", ("t", "h:1/p.S/M", "r")),
                         ("unsubscribe", ("t", "h:1/p.S/M")), ("delete_topic", "t")]


async def test_prepare_workflow_reply(stub: dtmgimp_pb2_grpc.DtmStub) -> None:
    gid = _gid()
    reply = await stub.PrepareWorkflow(dtmgimp_pb2.DtmRequest(
        Gid=gid, TransType="workflow", CustomedData='{"name":"w","data":null}'))
    assert reply.Transaction.Gid == gid and reply.Transaction.Status == "prepared"
    [p] = reply.Progresses
    assert (p.BranchID, p.Op, p.Status, p.BinData) == ("01", "action", "succeed", b"\x01\x02")


async def test_health_and_reflection(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "dtmgimp.Dtm"):
        r = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert r.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = refl.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    resp = await call.read()
    names = {s.name for s in resp.list_services_response.service}
    assert "dtmgimp.Dtm" in names
    await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol="dtmgimp.Dtm"))
    resp = await call.read()
    assert resp.file_descriptor_response.file_descriptor_proto
    await call.done_writing()


async def test_port_in_use_is_a_config_error(target: str, svc: RecordingService) -> None:
    port = int(target.rsplit(":", 1)[1])
    with pytest.raises(ConfigError):
        await start_grpc_server(svc, "127.0.0.1", port)


# --- the SDK transport against the same adapter -------------------------------------------


async def test_sdk_transport(target: str, svc: RecordingService) -> None:
    t = GrpcTransport(target)
    try:
        assert await t.new_gid() == "gid-from-service"
        gid = _gid()
        body = {
            "gid": gid, "trans_type": "saga", "protocol": "grpc", "concurrent": False,
            "steps": [{"action": "h:1/p.S/A", "compensate": "h:1/p.S/C"}],
            "payloads": ['{"amount":30}'], "wait_result": True, "timeout_to_fail": 9,
            "branch_headers": {"x-b": "2"}, "passthrough_headers": ["x"], "custom_data": None,
        }
        await t.submit(body)
        req = svc.calls[-1][1]
        assert req.steps == body["steps"] and req.payloads == [b'{"amount":30}']
        assert req.options.wait_result and req.options.timeout_to_fail == 9
        assert req.options.branch_headers == {"x-b": "2"}
        await t.prepare({"gid": gid, "trans_type": "tcc"})
        await t.abort({"gid": gid, "trans_type": "tcc", "rollback_reason": "r"})
        assert [n for n, _ in svc.calls[-2:]] == ["prepare", "abort"]
        await t.register_branch({"gid": gid, "trans_type": "tcc", "branch_id": "01",
                                 "data": "{}", "confirm": "c", "cancel": "x"})
        reg = svc.calls[-1][1]
        assert (reg.gid, reg.branch_id, reg.payload, reg.urls["confirm"], reg.urls["cancel"]) == (
            gid, "01", b"{}", "c", "x")
        svc.error = SFailure("no")
        with pytest.raises(Failure):
            await t.submit(body)
        svc.error = SOngoing()
        with pytest.raises(Ongoing):
            await t.submit(body)
        svc.error = None
        with pytest.raises(DtmError) as ei:
            await t.submit({"gid": "", "trans_type": "saga"})
        assert ei.value.grpc_code == "INVALID_ARGUMENT" and "gid" in ei.value.message
        with pytest.raises(DtmError):
            await t.query(gid)
    finally:
        await t.close()


async def test_sdk_transport_server_down() -> None:
    t = GrpcTransport(f"127.0.0.1:{free_port()}", timeout=2)
    try:
        with pytest.raises(DtmError) as ei:
            await t.new_gid()
        assert ei.value.grpc_code == "UNAVAILABLE"
    finally:
        await t.close()
