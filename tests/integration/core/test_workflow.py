"""Workflow mode, server side, with the raw-protocol driver (no SDK), on every store.

What DTM's Go workflow client relies on: prepareWorkflow answers a new and an existing
workflow alike with its recorded steps; registerBranch records a step once (a duplicate is
refused and the first kept); submit's req_extra sets the final status before the answer;
and a prepared workflow is resumed through its callback every retry interval, over HTTP or
gRPC, whatever the callback answers, and never failed by TimeoutToFail.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import grpc
import pytest
import requests
from google.protobuf import empty_pb2

from dtmx.proto import dtmgimp_pb2, wf_pb2, wf_pb2_grpc
from tests.integration.core.conftest import post
from tests.support.busi import BusiServer
from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.services import STORES
from tests.support.util import eventually, free_port
from tests.support.workflow import (
    DUPLICATE_CODES,
    FAILURE_CODES,
    OK_CODES,
    GrpcWorkflow,
    HttpWorkflow,
    progresses,
)

Driver = HttpWorkflow | GrpcWorkflow


@pytest.fixture(params=["http", "grpc"])
def driver(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[Driver]:
    if request.param == "http":
        yield HttpWorkflow(server.url)
        return
    d = GrpcWorkflow(f"127.0.0.1:{server.grpc_port}")
    yield d
    d.close()


def test_prepare_new_then_existing_with_progresses(server: ServerProcess, driver: Driver,
                                                   busi: BusiServer, gid: str) -> None:
    first = driver.prepare(gid, "transfer", b'{"amount":30}', callback=f"{busi.url}/Workflow")
    assert (first.Transaction.Gid, first.Transaction.Status) == (gid, "prepared")
    assert progresses(first) == []
    ok = OK_CODES[type(driver)]
    assert driver.register(gid, "01", "action", "succeed", b"out: ok").code == ok
    assert driver.register(gid, "02", "action", "failed", b"no money").code == ok
    assert driver.register(gid, "01", "rollback", "succeed").code == ok
    again = driver.prepare(gid, "transfer", b'{"amount":30}', callback=f"{busi.url}/Workflow")
    assert again.Transaction.Status == "prepared"
    assert progresses(again) == [("01", "action", "succeed", b"out: ok"),
                                 ("02", "action", "failed", b"no money"),
                                 ("01", "rollback", "succeed", b"")]
    # over HTTP the data travels as base64 bin_data (Go's []byte), as DTM answers it
    raw = HttpWorkflow(server.url).prepare_raw({"gid": gid, "trans_type": "workflow",
                                                "custom_data": '{"name":"transfer"}'})
    assert raw.json()["progresses"][0]["bin_data"] == base64.b64encode(b"out: ok").decode()
    q = server.query(gid)
    assert [(b["branch_id"], b["op"], b["status"]) for b in q["branches"]] == [
        ("01", "action", "succeed"), ("02", "action", "failed"), ("01", "rollback", "succeed")]
    driver.submit(gid, "failed", reason="no money")


def test_duplicate_step_is_refused_and_the_first_kept(driver: Driver, busi: BusiServer,
                                                      gid: str) -> None:
    driver.prepare(gid, "wf", None, callback=f"{busi.url}/Workflow")
    assert driver.register(gid, "01", "action", "succeed", b"first").code == OK_CODES[
        type(driver)]
    dup = driver.register(gid, "01", "action", "failed", b"second")
    assert dup.code == DUPLICATE_CODES[type(driver)]
    assert "already recorded" in dup.message
    reply = driver.prepare(gid, "wf", None, callback=f"{busi.url}/Workflow")
    assert progresses(reply) == [("01", "action", "succeed", b"first")]
    driver.submit(gid, "succeed")


def test_submit_sets_the_final_status_before_answering(server: ServerProcess, driver: Driver,
                                                       busi: BusiServer, gid: str) -> None:
    driver.prepare(gid, "wf", b"in", callback=f"{busi.url}/Workflow")
    assert driver.submit(gid, "succeed", result=b'{"ok":1}').code == OK_CODES[type(driver)]
    t = server.query(gid)["transaction"]  # no waiting: set before the answer
    assert (t["status"], base64.b64decode(t["result"])) == ("succeed", b'{"ok":1}')
    assert t.get("finish_time")
    # a replay reads the outcome instead of running again
    reply = driver.prepare(gid, "wf", b"in", callback=f"{busi.url}/Workflow")
    assert (reply.Transaction.Status, reply.Transaction.Result) == (
        "succeed", base64.b64encode(b'{"ok":1}').decode())
    # the same submit again is accepted; another outcome, or a new step, is refused
    assert driver.submit(gid, "succeed", result=b'{"ok":1}').code == OK_CODES[type(driver)]
    assert driver.submit(gid, "failed").code == FAILURE_CODES[type(driver)]
    assert driver.register(gid, "09", "action", "succeed").code == FAILURE_CODES[type(driver)]


def test_submit_failed_keeps_the_reason(server: ServerProcess, driver: Driver,
                                        busi: BusiServer, gid: str) -> None:
    driver.prepare(gid, "wf", b"in", callback=f"{busi.url}/Workflow")
    assert driver.submit(gid, "failed", reason="insufficient balance").code == OK_CODES[
        type(driver)]
    t = server.query(gid)["transaction"]
    assert (t["status"], t["rollback_reason"]) == ("failed", "insufficient balance")
    reply = driver.prepare(gid, "wf", b"in", callback=f"{busi.url}/Workflow")
    assert reply.Transaction.RollbackReason == "insufficient balance"


def test_submit_of_an_unknown_workflow_is_refused(driver: Driver, gid: str) -> None:
    assert driver.submit(gid, "succeed").code == FAILURE_CODES[type(driver)]


def _callback_calls(busi: BusiServer, gid: str) -> list[dict[str, str]]:
    with busi.state.lock:
        return [q for r, _, q in busi.state.requests if r == "Workflow" and q.get("gid") == gid]


def test_cron_resumes_through_the_http_callback(server: ServerProcess, busi: BusiServer,
                                                gid: str) -> None:
    d = HttpWorkflow(server.url)
    d.prepare(gid, "transfer", b'{"amount":30}', callback=f"{busi.url}/Workflow")
    started = time.time()
    # the test server's RetryInterval is 0.2 s and its TimeoutToFail 1 s: called again and
    # again, and still prepared after the timeout (only the client fails a workflow)
    eventually(lambda: len(_callback_calls(busi, gid)) >= 3 and time.time() - started > 1.5)
    assert server.query(gid)["transaction"]["status"] == "prepared"
    q = _callback_calls(busi, gid)[0]
    assert {k: q[k] for k in ("gid", "trans_type", "branch_id", "op", "method")} == {
        "gid": gid, "trans_type": "workflow", "branch_id": "00", "op": "transfer",
        "method": "POST"}
    assert busi.state.bodies[("Workflow", gid)] == b'{"amount":30}'
    assert d.submit(gid, "succeed").code == 200
    assert server.query(gid)["transaction"]["status"] == "succeed"


class _ReplayingClient:
    """An HTTP workflow callback that does what DTM's client does when resumed: prepare
    (reading the recorded steps), run the steps not recorded yet, submit, answer 200."""

    def __init__(self, server: ServerProcess) -> None:
        driver = HttpWorkflow(server.url)
        self.replays: list[list[tuple[str, str, str, bytes]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                q = dict(parse_qsl(urlsplit(self.path).query))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                reply = driver.prepare(q["gid"], q["op"], body, callback=outer.url)
                done = progresses(reply)
                outer.replays.append(done)
                if ("02", "action", "succeed", b"in ok") not in done:
                    driver.register(q["gid"], "02", "action", "succeed", b"in ok")
                driver.submit(q["gid"], "succeed", result=b"resumed")
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/workflow/resume"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_crashed_workflow_is_finished_by_its_replaying_client(server: ServerProcess,
                                                                gid: str) -> None:
    client = _ReplayingClient(server)
    try:
        d = HttpWorkflow(server.url)
        d.prepare(gid, "transfer", b'{"amount":30}', callback=client.url)
        d.register(gid, "01", "action", "succeed", b"out ok")
        # ... and the process dies before step 02: the poller resumes it through the callback
        q = server.wait_status(gid, "succeed")
        assert base64.b64decode(q["transaction"]["result"]) == b"resumed"
        assert client.replays[0] == [("01", "action", "succeed", b"out ok")]
        assert [(b["branch_id"], b["op"]) for b in q["branches"]] == [
            ("01", "action"), ("02", "action")]
    finally:
        client.close()


@pytest.mark.parametrize("store", STORES)
def test_two_servers_never_call_one_workflow_back_at_once(
        store: str, busi: BusiServer, tmp_path: Any, cleanup: contextlib.ExitStack) -> None:
    # both servers poll the same store every 0.05 s; each callback takes longer than the
    # retry interval, so only the owner token and the lease keep the calls apart
    block = cleanup.enter_context(scratch_store(store, "dtmx_wf", str(tmp_path)))
    servers = [cleanup.enter_context(ServerProcess(store=block)) for _ in range(2)]
    gid = f"wf2-{uuid.uuid4().hex}"
    busi.state.set("Workflow", "SLEEP:0.3")
    try:
        HttpWorkflow(servers[0].url).prepare(gid, "wf", b"x", callback=f"{busi.url}/Workflow")
        eventually(lambda: busi.state.count("Workflow", gid) >= 4, timeout=20)
        assert ("Workflow", gid) not in busi.state.overlaps
        assert HttpWorkflow(servers[1].url).submit(gid, "succeed").code == 200
    finally:
        busi.state.set("Workflow", "SUCCESS")


@pytest.mark.parametrize("answer", ["FAILURE", "ONGOING", "ERROR"])
def test_callback_answers_leave_the_status_to_the_client(
        server: ServerProcess, busi: BusiServer, gid: str, answer: str) -> None:
    busi.state.set("Workflow", answer)  # 409, 425, 500
    try:
        HttpWorkflow(server.url).prepare(gid, "wf", b"x", callback=f"{busi.url}/Workflow")
        eventually(lambda: len(_callback_calls(busi, gid)) >= 2)
        t = server.query(gid)["transaction"]
        assert t["status"] == "prepared"
        if answer == "ERROR":  # errors back off; ongoing and failure keep the interval
            eventually(lambda: server.query(gid)["transaction"]["next_cron_interval"] > 0.2)
        else:
            assert server.query(gid)["transaction"]["next_cron_interval"] == pytest.approx(0.2)
    finally:
        busi.state.set("Workflow", "SUCCESS")
        post(server, "forceStop", {"gid": gid})


class _WorkflowService(grpc.GenericRpcHandler):
    """A gRPC workflow callback: records Execute calls, answers `code`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes, dict[str, str]]] = []
        self.code = grpc.StatusCode.OK

    def service(self, details: Any) -> grpc.RpcMethodHandler:
        method = details.method

        def handle(request: bytes, context: Any) -> bytes:
            md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            self.calls.append((method, request, md))
            if self.code != grpc.StatusCode.OK:
                context.abort(self.code, "from the test")
            return b""

        return grpc.unary_unary_rpc_method_handler(handle)


@pytest.fixture(scope="module")
def wf_grpc() -> Iterator[tuple[_WorkflowService, str]]:
    svc = _WorkflowService()
    srv = grpc.server(futures.ThreadPoolExecutor(4))
    srv.add_generic_rpc_handlers((svc,))
    port = free_port()
    srv.add_insecure_port(f"127.0.0.1:{port}")
    srv.start()
    yield svc, f"127.0.0.1:{port}"
    srv.stop(None)


@pytest.mark.parametrize("code", [grpc.StatusCode.OK, grpc.StatusCode.ABORTED,
                                  grpc.StatusCode.FAILED_PRECONDITION])
def test_cron_resumes_through_the_grpc_callback(
        server: ServerProcess, wf_grpc: tuple[_WorkflowService, str], gid: str,
        code: grpc.StatusCode) -> None:
    svc, target = wf_grpc
    svc.code = code
    d = GrpcWorkflow(f"127.0.0.1:{server.grpc_port}")
    try:
        d.prepare(gid, "transfer", b"\x00bin", callback=f"{target}/workflow.Workflow/Execute")

        def mine() -> list[tuple[str, bytes, dict[str, str]]]:
            return [c for c in list(svc.calls) if c[2].get("dtm-gid") == gid]

        eventually(lambda: len(mine()) >= 2)
        method, payload, md = mine()[0]
        assert method == "/workflow.Workflow/Execute"
        assert wf_pb2.WorkflowData.FromString(payload).Data == b"\x00bin"
        assert {k: md[k] for k in ("dtm-trans_type", "dtm-branch_id", "dtm-op")} == {
            "dtm-trans_type": "workflow", "dtm-branch_id": "00", "dtm-op": "transfer"}
        assert server.query(gid)["transaction"]["status"] == "prepared"
        assert d.submit(gid, "succeed").code == "OK"
    finally:
        d.close()


class _GrpcReplayingClient(wf_pb2_grpc.WorkflowServicer):
    """A gRPC workflow callback built on the generated servicer: replays the workflow over
    gRPC as DTM's client does (PrepareWorkflow, the missing step, Submit) and answers OK."""

    def __init__(self, dtm_target: str) -> None:
        self.driver = GrpcWorkflow(dtm_target)
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.callback = ""

    def Execute(self, request: wf_pb2.WorkflowData, context: Any) -> Any:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.seen.append((md, request.Data))
        gid, name = md["dtm-gid"], md["dtm-op"]
        # the replay sends its TransBase again, callback included (checked by the policy)
        reply = self.driver.prepare(gid, name, request.Data, callback=self.callback)
        if len(reply.Progresses) < 2:
            self.driver.register(gid, "02", "action", "succeed", b"\x02")
        self.driver.submit(gid, "succeed", result=b"grpc resumed")
        return empty_pb2.Empty()


def test_a_crashed_grpc_workflow_is_finished_through_execute(server: ServerProcess,
                                                             gid: str) -> None:
    servicer = _GrpcReplayingClient(f"127.0.0.1:{server.grpc_port}")
    srv = grpc.server(futures.ThreadPoolExecutor(2))
    wf_pb2_grpc.add_WorkflowServicer_to_server(servicer, srv)
    port = free_port()
    srv.add_insecure_port(f"127.0.0.1:{port}")
    srv.start()
    d = GrpcWorkflow(f"127.0.0.1:{server.grpc_port}")
    try:
        servicer.callback = f"127.0.0.1:{port}/workflow.Workflow/Execute"
        d.prepare(gid, "transfer", b"\x00in", callback=servicer.callback)
        d.register(gid, "01", "action", "succeed", b"\x01")
        q = server.wait_status(gid, "succeed")
        assert base64.b64decode(q["transaction"]["result"]) == b"grpc resumed"
        md, data = servicer.seen[0]
        assert (md["dtm-gid"], md["dtm-op"], data) == (gid, "transfer", b"\x00in")
        assert [base64.b64decode(b["bin_data"]) for b in q["branches"]] == [b"\x01", b"\x02"]
    finally:
        d.close()
        servicer.driver.close()
        srv.stop(None)


@pytest.mark.parametrize(
    ("route", "body", "needle"),
    [
        ("prepareWorkflow", {"gid": "g", "trans_type": "saga"}, "trans_type workflow"),
        ("prepareWorkflow", {"gid": "g", "trans_type": "workflow"}, "custom_data"),
        ("prepareWorkflow", {"gid": "g", "trans_type": "workflow",
                             "custom_data": '{"name":"w","data":"%%%"}'}, "base64"),
        ("prepareWorkflow", {"gid": "g", "trans_type": "workflow",
                             "custom_data": '{"name":""}'}, "name"),
        ("registerBranch", {"gid": "g", "trans_type": "workflow", "branch_id": "01",
                            "op": "fly", "status": "succeed"}, "unknown op"),
        ("registerBranch", {"gid": "g", "trans_type": "workflow", "branch_id": "01",
                            "op": "action", "status": "prepared"}, "status"),
        ("submit", {"gid": "g", "trans_type": "workflow"}, "req_extra.status"),
        ("submit", {"gid": "g", "trans_type": "workflow",
                    "req_extra": {"status": "succeed", "result": "@@"}}, "base64"),
        ("abort", {"gid": "g", "trans_type": "workflow"}, "cannot be aborted"),
        # the callback is a branch URL: the branch-URL policy refuses cloud metadata by default
        ("prepareWorkflow", {"gid": "g", "trans_type": "workflow", "custom_data": '{"name":"w"}',
                             "query_prepared": "http://169.254.169.254/latest"}, "169.254"),
    ],
)
def test_bad_input_is_a_400_with_a_message(server: ServerProcess, route: str,
                                           body: dict[str, Any], needle: str) -> None:
    r = requests.post(f"{server.url}/{route}", json=body, timeout=5)
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]


def test_bad_grpc_input_is_invalid_argument(server: ServerProcess) -> None:
    d = GrpcWorkflow(f"127.0.0.1:{server.grpc_port}")
    try:
        with pytest.raises(grpc.RpcError) as ei:
            d.prepare_request(dtmgimp_pb2.DtmRequest(Gid="g", TransType="workflow",
                                                     CustomedData="{bad"))
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert d.register("g", "01", "nope", "succeed").code == "INVALID_ARGUMENT"
    finally:
        d.close()
