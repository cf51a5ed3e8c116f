"""gRPC end to end, the cases DTM's suite has and ours lacked: RequestTimeout carried to a
branch's deadline, and topics over the real server's gRPC API."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from dtmx.api.proto import dtmgimp_pb2, dtmgimp_pb2_grpc
from tests.integration.grpc.test_grpc_server import _gid, _query, _req, _saga, _wait
from tests.support.grpc_busi import GrpcBusi
from tests.support.server import ServerProcess
from tests.support.util import aeventually


async def test_request_timeout_is_the_branch_deadline_then_retried(
        server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub, busi: GrpcBusi) -> None:
    """The transaction's RequestTimeout (1 s; the server's default is 2 s here) is the gRPC
    deadline of each branch call; a call that runs past it is an error, retried."""
    busi.set_delay("TransIn", 1.5)
    gid = _gid()
    opts = dtmgimp_pb2.DtmTransOptions(RequestTimeout=1)
    await dtm.Submit(_saga(busi, gid, TransOptions=opts))
    await aeventually(lambda: _true(len(busi.calls_of("TransIn")) >= 1))
    busi.set_delay("TransIn", 0)
    await _wait(server, gid, "succeed")
    first, *retries = busi.calls_of("TransIn")
    # its deadline was 1 s, not the server's default of 2 s
    assert first.time_remaining is not None and 0.5 < first.time_remaining <= 1.1
    assert len(retries) >= 1
    q = await _query(server, gid)
    assert q["transaction"]["request_timeout"] == 1


async def test_topics_over_grpc_against_the_server(
        server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub, busi: GrpcBusi) -> None:
    topic = "grpc-topic-" + uuid.uuid4().hex[:8]
    sub = dtmgimp_pb2.DtmTopicRequest(Topic=topic, URL=busi.url("TransIn"), Remark="r")
    await dtm.Subscribe(sub)
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await dtm.Subscribe(sub)
    assert twice.value.code() == grpc.StatusCode.ABORTED  # already subscribed (HTTP 409)
    gid = _gid()
    await dtm.Submit(dtmgimp_pb2.DtmRequest(
        Gid=gid, TransType="msg", Steps=f'[{{"action":"topic://{topic}"}}]',
        BinPayloads=[_req(7)]))
    q = await _wait(server, gid, "succeed")
    assert [b["branch_id"] for b in q["branches"]] == ["01"]  # one subscriber: no suffix, as DTM
    [call] = busi.calls_of("TransIn")
    assert call.request().Amount == 7 and call.metadata["dtm-gid"] == gid

    await dtm.Unsubscribe(dtmgimp_pb2.DtmTopicRequest(Topic=topic,
                                                      URL=busi.url("TransIn")))
    for again in (dtm.Unsubscribe(dtmgimp_pb2.DtmTopicRequest(
            Topic=topic, URL=busi.url("TransIn"))),
            dtm.DeleteTopic(dtmgimp_pb2.DtmTopicRequest(Topic=topic + "-none"))):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await again
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # HTTP 404; DTM: 500
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await dtm.Subscribe(dtmgimp_pb2.DtmTopicRequest(Topic=topic, URL=""))
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _true(v: bool) -> bool:
    await asyncio.sleep(0)
    return v
