"""Spans of a real `dtmx serve`, exported over OTLP/gRPC to a receiver in this process.

The server is configured only by the standard OTEL_* variables. A caller's traceparent
starts each trace, so every assertion is about the spans of one known trace.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
from google.protobuf import empty_pb2

from dtmx.api.proto import dtmgimp_pb2_grpc
from tests.support.busi import BusiServer
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.server import ServerProcess
from tests.support.util import eventually, free_port

SERVER, CLIENT = 2, 3  # OTLP's span kinds


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def busi() -> Iterator[BusiServer]:
    b = BusiServer(free_port()).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def server(otlp: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50",
           "OTEL_SERVICE_NAME": "dtmx-under-test"}
    s = ServerProcess(workdir=str(tmp_path_factory.mktemp("dtmx")), env=env,
                      extra={"Log": {"Format": "json"}}).start()
    yield s
    s.stop()


def caller() -> tuple[str, str, str]:
    """A made-up caller span: (trace id, span id, its traceparent header)."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def spans_of(otlp: OtlpReceiver, trace_id: str, *names: str) -> dict[str, list[ReceivedSpan]]:
    """Waits until every name in `names` has a span in the trace; returns them by name."""

    def all_there() -> dict[str, list[ReceivedSpan]]:
        got: dict[str, list[ReceivedSpan]] = {}
        for s in otlp.in_trace(trace_id):
            got.setdefault(s.name, []).append(s)
        missing = set(names) - set(got)
        assert not missing, (missing, sorted(got))
        return got

    return eventually(all_there, timeout=10)


def submit(server: ServerProcess, body: dict[str, Any], traceparent: str) -> None:
    r = requests.post(f"{server.url}/submit", json=body, timeout=10,
                      headers={"traceparent": traceparent})
    assert r.status_code == 200, r.text


def test_saga_trace_from_caller_through_branches(server: ServerProcess, busi: BusiServer,
                                                 otlp: OtlpReceiver) -> None:
    trace_id, caller_span, traceparent = caller()
    gid = f"tr-{uuid.uuid4().hex}"
    submit(server, {"gid": gid, "trans_type": "saga", "payloads": ["{}", "{}"], "steps": [
        {"action": f"{busi.url}/TrOut", "compensate": f"{busi.url}/TrOutRevert"},
        {"action": f"{busi.url}/TrIn", "compensate": f"{busi.url}/TrInRevert"}]}, traceparent)
    server.wait_status(gid, "succeed")
    got = spans_of(otlp, trace_id, "POST /api/dtmsvr/submit", "dtmx run", "dtmx action 01",
                   "dtmx action 02", "store create", "store update")
    [api] = got["POST /api/dtmsvr/submit"]
    assert api.kind == SERVER and api.parent_id == caller_span
    assert api.attributes["dtm.gid"] == gid and api.attributes["dtm.trans_type"] == "saga"
    assert api.service == "dtmx-under-test"
    [run] = got["dtmx run"]
    assert run.parent_id == api.span_id and run.attributes["dtm.status"] == "succeed"
    for bid, route in (("01", "TrOut"), ("02", "TrIn")):
        [call] = got[f"dtmx action {bid}"]
        assert call.kind == CLIENT and call.parent_id == run.span_id
        assert call.attributes == {"dtm.gid": gid, "dtm.trans_type": "saga",
                                   "dtm.branch_id": bid, "dtm.op": "action",
                                   "url.full": f"{busi.url}/{route}", "dtm.outcome": "success"}
        # the branch was called as a child of that client span (W3C traceparent)
        sent = busi.state.headers[(route, gid)]
        assert sent["traceparent"] == f"00-{trace_id}-{call.span_id}-01"
    [create] = got["store create"]
    assert create.kind == CLIENT and create.attributes["dtm.gid"] == gid
    assert create.parent_id == api.span_id


def test_tcc_prepare_and_register_spans(server: ServerProcess, busi: BusiServer,
                                        otlp: OtlpReceiver) -> None:
    trace_id, caller_span, traceparent = caller()
    gid = f"tr-{uuid.uuid4().hex}"
    headers = {"traceparent": traceparent}
    r = requests.post(f"{server.url}/prepare", json={"gid": gid, "trans_type": "tcc"},
                      headers=headers, timeout=10)
    assert r.status_code == 200
    r = requests.post(f"{server.url}/registerBranch", headers=headers, timeout=10, json={
        "gid": gid, "branch_id": "01", "trans_type": "tcc", "data": "{}",
        "confirm": f"{busi.url}/TrConfirm", "cancel": f"{busi.url}/TrCancel"})
    assert r.status_code == 200
    submit(server, {"gid": gid, "trans_type": "tcc"}, traceparent)
    server.wait_status(gid, "succeed")
    got = spans_of(otlp, trace_id, "POST /api/dtmsvr/prepare",
                   "POST /api/dtmsvr/registerBranch", "dtmx confirm 01", "store add_branches")
    [reg] = got["POST /api/dtmsvr/registerBranch"]
    assert reg.parent_id == caller_span
    assert (reg.attributes["dtm.gid"], reg.attributes["dtm.branch_id"]) == (gid, "01")
    [confirm] = got["dtmx confirm 01"]
    assert confirm.attributes["dtm.op"] == "confirm"


def test_poller_pick_up_continues_the_submitters_trace(server: ServerProcess, busi: BusiServer,
                                                       otlp: OtlpReceiver) -> None:
    # the first call errors: the retry is a run started by the poller, with no caller in
    # sight but the traceparent the submitter left in branch_headers
    trace_id, caller_span, traceparent = caller()
    gid = f"tr-{uuid.uuid4().hex}"
    busi.state.set("TrRetried", "ERROR", "SUCCESS")
    submit(server, {"gid": gid, "trans_type": "saga", "payloads": ["{}"],
                    "branch_headers": {"traceparent": traceparent},
                    "steps": [{"action": f"{busi.url}/TrRetried", "compensate": ""}]},
           traceparent)
    server.wait_status(gid, "succeed")
    got = spans_of(otlp, trace_id, "dtmx poller pick-up")
    [pickup] = got["dtmx poller pick-up"]
    assert pickup.parent_id == caller_span and pickup.attributes["dtm.gid"] == gid
    calls = got["dtmx action 01"]
    assert len(calls) == 2 and {c.parent_id for c in calls} == {
        pickup.span_id, got["dtmx run"][0].span_id}
    # the poller's claims are not traced on their own (no trace per idle poll)
    assert not otlp.named("store claim_due")


def test_grpc_server_span_continues_metadata(server: ServerProcess, otlp: OtlpReceiver) -> None:
    trace_id, caller_span, traceparent = caller()
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = dtmgimp_pb2_grpc.DtmStub(channel)
        assert stub.NewGid(empty_pb2.Empty(), metadata=(("traceparent", traceparent),)).Gid
    [span] = spans_of(otlp, trace_id, "/dtmgimp.Dtm/NewGid")["/dtmgimp.Dtm/NewGid"]
    assert span.kind == SERVER and span.parent_id == caller_span


def test_log_lines_carry_the_trace_id(server: ServerProcess, busi: BusiServer) -> None:
    trace_id, _, traceparent = caller()
    gid = f"tr-{uuid.uuid4().hex}"
    busi.state.set("TrLogged", "ERROR", "SUCCESS")
    submit(server, {"gid": gid, "trans_type": "saga", "payloads": ["{}"],
                    "steps": [{"action": f"{busi.url}/TrLogged", "compensate": ""}]},
           traceparent)
    server.wait_status(gid, "succeed")
    assert f'"gid":"{gid}","trace_id":"{trace_id}"' in server.log()
    assert os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") is None  # the test's own stays clean
