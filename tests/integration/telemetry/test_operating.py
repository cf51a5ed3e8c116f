"""Metrics, alert webhook and logs of a real `dtmx serve`, on SQLite and PostgreSQL.

One server per store for the module, with JSON logs, the access log, a webhook listener and
(on PostgreSQL) DTM's exact label set. Counters are compared before and after each scenario,
so the tests do not depend on each other's traffic.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
from google.protobuf import empty_pb2
from prometheus_client.parser import text_string_to_metric_families

from dtmx.api.proto import dtmgimp_pb2_grpc
from tests.support.busi import BusiServer
from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.util import eventually, free_port
from tests.support.webhook import WebhookListener

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def hook() -> Iterator[WebhookListener]:
    """The webhook: the first POST about each transaction answers 500 (the sender retries)."""
    h = WebhookListener(refusals=1, path="/dtm-hook?token=s3cret-hook")
    yield h
    h.close()


@pytest.fixture(scope="module")
def busi() -> Iterator[BusiServer]:
    b = BusiServer(free_port()).start()
    yield b
    b.stop()


@pytest.fixture(scope="module", params=("sqlite", "postgres"))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           hook: WebhookListener) -> Iterator[ServerProcess]:
    workdir = str(tmp_path_factory.mktemp("dtmx"))
    extra = {
        "Log": {"Format": "json", "AccessLog": True},
        "Telemetry": {"DtmLabels": request.param == "postgres"},
        "AlertWebHook": hook.url,
        "AlertRetryLimit": 2,
        "Alert": {"Notify": "retry,failed,stuck", "StuckAfter": 1, "Backoff": 0.2},
        "NoSuchKey": 1,  # its warning must come out through the JSON logger
    }
    with scratch_store(request.param, "dtmx_tel", workdir) as block, \
            ServerProcess(store=block, extra=extra, workdir=workdir) as s:
        yield s


def new_gid() -> str:
    return f"tel-{uuid.uuid4().hex}"


def post(server: ServerProcess, route: str, body: Any) -> requests.Response:
    return requests.post(f"{server.url}/{route}", json=body, timeout=15)


def saga(server: ServerProcess, busi: BusiServer, gid: str, *steps: tuple[str, str],
         **extra: Any) -> None:
    body = {"gid": gid, "trans_type": "saga", "payloads": ["{}"] * len(steps),
            "steps": [{"action": f"{busi.url}/{a}", "compensate": f"{busi.url}/{c}"}
                      for a, c in steps], **extra}
    assert post(server, "submit", body).status_code == 200


def scrape(server: ServerProcess) -> Samples:
    text = requests.get(f"http://127.0.0.1:{server.http_port}/api/metrics", timeout=5).text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_after_a_saga_and_a_failing_tcc(server: ServerProcess, busi: BusiServer) -> None:
    dtm_labels = bool(server.conf["Telemetry"]["DtmLabels"])
    before = scrape(server)
    ok_gid = new_gid()
    saga(server, busi, ok_gid, ("MetOut", "MetOutRevert"), ("MetIn", "MetInRevert"))
    server.wait_status(ok_gid, "succeed")
    # a TCC whose try failed: the client aborts, one cancel errors once and is retried
    tcc = new_gid()
    busi.state.set("MetTccCancel", "ERROR", "SUCCESS")
    assert post(server, "prepare", {"gid": tcc, "trans_type": "tcc"}).status_code == 200
    for bid in ("01", "02"):
        r = post(server, "registerBranch", {
            "gid": tcc, "branch_id": bid, "trans_type": "tcc", "data": "{}",
            "confirm": f"{busi.url}/MetTccConfirm", "cancel": f"{busi.url}/MetTccCancel"})
        assert r.status_code == 200
    assert post(server, "abort", {"gid": tcc, "trans_type": "tcc"}).status_code == 200
    server.wait_status(tcc, "failed")
    assert post(server, "submit", {"gid": new_gid()}).status_code == 400
    with grpc.insecure_channel(server.grpc_target) as channel:
        assert dtmgimp_pb2_grpc.DtmStub(channel).NewGid(empty_pb2.Empty()).Gid

    def grew(after: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    def branch(model: str, op: str, status: str) -> float:
        if not dtm_labels:
            return grew(after, "dtm_branch_process_total", model=model, branchtype=op,
                        status=status)
        return sum(grew(after, "dtm_branch_process_total", model=model, branchtype=op,
                        status=status, branchid=b) for b in ("01", "02"))

    def settled() -> Samples:
        s = scrape(server)
        assert value(s, "dtmx_runs_in_flight") == 0
        assert grew(s, "dtm_transaction_process_total", model="tcc", status="fail") == 1
        return s

    after = eventually(settled, timeout=10)
    info = [k for k in after if k[0] == "dtm_server_info"]
    assert len(info) == 1 and dict(info[0][1])["version"]
    for api, status, n in (("submit", "ok", 1), ("submit", "fail", 1), ("prepare", "ok", 1),
                           ("registerbranch", "ok", 2), ("abort", "ok", 1)):
        assert grew(after, "dtm_server_process_total", type="http", api=api,
                    status=status) == n, api
    assert grew(after, "dtm_server_process_total", type="grpc", api="newgid", status="ok") == 1
    assert grew(after, "dtm_server_response_duration_count", type="http", api="submit") == 2
    assert grew(after, "dtm_transaction_process_total", model="saga", status="ok") == 1
    assert grew(after, "dtm_transaction_handled_duration_count", model="saga") == 1
    assert grew(after, "dtm_transaction_handled_duration_count", model="tcc") == 1
    assert branch("saga", "action", "ok") == 2
    assert branch("tcc", "cancel", "ok") == 2
    assert branch("tcc", "cancel", "fail") == 1
    # the label set: DTM's exact one (with branchid) only behind the switch
    branch_keys = {frozenset(dict(k[1])) for k in after if k[0] == "dtm_branch_process_total"}
    expected = {"model", "branchtype", "status"} | ({"branchid"} if dtm_labels else set())
    assert branch_keys == {frozenset(expected)}
    # ours
    assert grew(after, "dtmx_store_duration_seconds_count", verb="create") >= 2
    assert grew(after, "dtmx_store_duration_seconds_count", verb="update") >= 2
    assert grew(after, "dtmx_store_roundtrips_total") >= 6
    assert value(after, "dtmx_poller_lag_seconds") >= 0
    assert ("dtmx_lease_takeovers_total", frozenset()) in after


def test_alerts_once_per_transaction_and_kind(server: ServerProcess, busi: BusiServer,
                                              hook: WebhookListener) -> None:
    # three errors: DTM's retry count reaches 2 (AlertRetryLimit) at the second; the third
    # comes more than StuckAfter (1 s) after the start
    erring = new_gid()
    busi.state.set("AlertIn", "ERROR", "ERROR", "ERROR", "SUCCESS")
    saga(server, busi, erring, ("AlertOut", "AlertOutRevert"), ("AlertIn", "AlertInRevert"))
    failing = new_gid()
    busi.state.set("AlertRefused", "FAILURE")
    saga(server, busi, failing, ("AlertRefused", "AlertRefusedRevert"))
    server.wait_status(erring, "succeed")
    server.wait_status(failing, "failed")

    def delivered() -> bool:
        assert sorted(b["kind"] for b in hook.of(erring)) == ["retry", "stuck"]
        assert [b["kind"] for b in hook.of(failing)] == ["failed"]
        return True

    eventually(delivered, timeout=10)
    retry = next(b for b in hook.of(erring) if b["kind"] == "retry")
    # DTM's body, plus `kind`
    assert retry == {"gid": erring, "status": "submitted", "branch": f"{busi.url}/AlertIn",
                     "error": retry["error"], "retry_count": 2, "kind": "retry"}
    assert "500" in retry["error"]
    failed = hook.of(failing)[0]
    assert failed["status"] == "failed" and "AlertRefused" in failed["error"]
    assert "s3cret-hook" not in server.log()  # the webhook's token is never logged


def test_logs_json_with_gid_access_log_and_start_stop_lines(
    server: ServerProcess, busi: BusiServer
) -> None:
    gid = new_gid()
    busi.state.set("LogIn", "ERROR", "SUCCESS")
    saga(server, busi, gid, ("LogIn", "LogInRevert"))
    server.wait_status(gid, "succeed")
    server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "msg"} <= set(x) for x in lines)
    about = [x for x in lines if x.get("gid") == gid]
    assert any(x["logger"] == "dtmx.engine" and "500" in x["msg"] for x in about), about
    assert any(x["logger"] == "dtmx.access" and x["msg"].startswith(
        "POST /api/dtmsvr/submit 200") for x in about)
    start = next(x["msg"] for x in lines if " started: " in x["msg"])
    driver = server.conf["Store"]["Driver"]
    assert f"store {driver} " in start and f"http 0.0.0.0:{server.http_port}" in start
    assert f"grpc {server.grpc_port}" in start and "workers 1" in start
    password = server.conf["Store"].get("Password")
    if password:
        assert password not in server.log()
    assert any("unknown config key NoSuchKey" in x["msg"] and x["level"] == "warning"
               for x in lines)
    assert lines[-1]["msg"].startswith("dtmx stopped")
