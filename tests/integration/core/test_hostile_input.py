"""Hostile and careless input against a real `dtmx serve` (issue 10): every case is a 4xx
naming the field and its range or the reason, nothing out of range is stored, and the
server log has one line per client error, never a traceback. SQLite and Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.integration.core.conftest import TRANSFER, post, saga_body
from tests.support.busi import BusiServer
from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.util import eventually

FANOUT = 50


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    workdir = str(tmp_path_factory.mktemp("dtmx"))
    with scratch_store(request.param, "dtmx_it", workdir) as block, \
            ServerProcess(store=block, workdir=workdir,
                          extra={"Limits": {"MaxTopicFanout": FANOUT}}) as s:
        yield s


def get(server: ServerProcess, route: str, **params: Any) -> requests.Response:
    return requests.get(f"{server.url}/{route}", params=params, timeout=15)


def refused(r: requests.Response, status: int, *needles: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    message = r.json()["message"]
    for needle in needles:
        assert needle in message, message


def nothing_stored(server: ServerProcess, gid: str) -> None:
    r = get(server, "query", gid=gid)
    assert r.status_code == 200 and r.json()["transaction"] is None, r.text


@pytest.mark.parametrize(("field", "value"), [
    ("request_timeout", 200_000_000_000),
    ("timeout_to_fail", 3e11),
    ("retry_interval", 1e300),
    ("retry_limit", 2**64),
    ("request_timeout", -1),
    ("retry_interval", 1.5),
])
def test_out_of_range_options_are_400_and_never_stored(
        server: ServerProcess, busi: BusiServer, gid: str, field: str, value: Any) -> None:
    r = post(server, "submit", saga_body(gid, busi, *TRANSFER, **{field: value}))
    refused(r, 400, field, "0..")
    nothing_stored(server, gid)


def test_tcc_prepare_and_msg_delay_out_of_range(server: ServerProcess, busi: BusiServer,
                                                 gid: str) -> None:
    r = post(server, "prepare", {"gid": gid, "trans_type": "tcc", "timeout_to_fail": 3e11})
    refused(r, 400, "timeout_to_fail must be an integer in 0..2147483647")
    body = {"gid": gid, "trans_type": "msg", "steps": [{"action": f"{busi.url}/TransIn"}],
            "payloads": ["{}"], "custom_data": '{"delay": 1e12}'}
    refused(post(server, "submit", body), 400, "custom_data.delay", "0..2147483647")
    nothing_stored(server, gid)


def test_a_huge_timeout_at_the_edge_of_the_range_still_reads(
        server: ServerProcess, busi: BusiServer, gid: str) -> None:
    big = 2**31 - 1
    r = post(server, "prepare", {"gid": gid, "trans_type": "tcc", "timeout_to_fail": big,
                                 "request_timeout": big, "retry_interval": big})
    assert r.status_code == 200, r.text
    q = get(server, "query", gid=gid)
    assert q.status_code == 200 and q.json()["transaction"]["timeout_to_fail"] == big
    page = get(server, "all", limit=1000)
    assert page.status_code == 200


@pytest.mark.parametrize(("route", "params", "needle"), [
    ("all", {"position": str(2**63)}, "position must be an integer in 0..9007199254740991"),
    ("all", {"position": "abc"}, "position must be an integer"),
    ("all", {"limit": str(2**63 - 1)}, "limit must be an integer in 1..1000"),
    ("all", {"limit": "0"}, "limit must be an integer in 1..1000"),
    ("all", {"createTimeStart": "1e20"}, "createTimeStart"),
    ("all", {"status": "nope"}, "unknown status"),
    ("scanKV", {"cat": "topics", "position": "1e20"}, "position"),
    ("scanKV", {"cat": "topics", "limit": "1e20"}, "limit must be an integer in 1..1000"),
    ("resetCronTime", {"limit": "1e20"}, "limit must be an integer in 1..1000"),
    ("resetCronTime", {"timeout": str(2**64)}, "timeout must be an integer in 0..2147483647"),
])
def test_query_parameters_out_of_range_are_400(server: ServerProcess, route: str,
                                               params: dict[str, str], needle: str) -> None:
    refused(get(server, route, **params), 400, needle)


@pytest.mark.parametrize(("headers", "needle"), [
    ({"X-Bad\r\nInjected": "1"}, "not a valid header name"),
    ({"X Space": "1"}, "not a valid header name"),
    ({"X-Ok": "a\r\nb"}, "control character"),
])
def test_branch_headers_that_could_never_be_sent_are_refused(
        server: ServerProcess, busi: BusiServer, gid: str, headers: dict[str, str],
        needle: str) -> None:
    r = post(server, "submit", saga_body(gid, busi, *TRANSFER, branch_headers=headers))
    refused(r, 400, "branch_headers", needle)
    nothing_stored(server, gid)


def test_accepted_then_stuck_cases_are_refused_up_front(server: ServerProcess, busi: BusiServer,
                                                         gid: str) -> None:
    # a workflow submit must say how the workflow ended (DTM's client sends req_extra)
    refused(post(server, "submit", {"gid": gid, "trans_type": "workflow"}), 400,
            "req_extra.status")
    nothing_stored(server, gid)
    # XA registerBranch on a TCC gid: its commit would never be sent
    assert post(server, "prepare", {"gid": gid, "trans_type": "tcc"}).status_code == 200
    r = post(server, "registerBranch", {"gid": gid, "trans_type": "xa", "branch_id": "01",
                                        "url": f"{busi.url}/xa", "data": "{}"})
    refused(r, 400, f"gid {gid} is a tcc, not a xa")
    assert get(server, "query", gid=gid).json()["branches"] == []
    # TCC submit on a gid that is a (running or finished) saga
    saga_gid = gid + "-s"
    assert post(server, "submit", saga_body(saga_gid, busi, *TRANSFER)).status_code == 200
    refused(post(server, "submit", {"gid": saga_gid, "trans_type": "tcc"}), 400,
            "is a saga, not a tcc")


def test_steps_over_the_limit_and_order_graphs(server: ServerProcess, busi: BusiServer,
                                              gid: str) -> None:
    steps = [("TransIn", "TransInRevert")] * 1001
    refused(post(server, "submit", saga_body(gid, busi, *steps)), 400,
            "1001 steps is more than Limits.MaxBranches (1000)")
    nothing_stored(server, gid)
    # a reverse chain over 1,000 steps is checked and run without recursion, to the end
    n = 1000
    orders = {str(i): [i + 1] for i in range(n - 1)}
    body = {"gid": gid, "trans_type": "saga", "payloads": [""] * n,
            "steps": [{"action": "", "compensate": ""}] * n,  # empty URLs: no calls
            "custom_data": json.dumps({"concurrent": True, "orders": orders})}
    r = post(server, "submit", body)
    assert r.status_code == 200, r.text
    # one step at a time, each planned over the whole graph and written before the next:
    # seconds on a slow 2-core machine with other tests running, so the bound is loose
    q = server.wait_status(gid, "succeed", timeout=60)
    assert [b["status"] for b in q["branches"] if b["op"] == "action"] == ["succeed"] * n
    body["gid"] = gid + "-c"
    body["custom_data"] = json.dumps({"concurrent": True, "orders": {**orders, str(n - 1): [0]}})
    refused(post(server, "submit", body), 400, "cycle")
    nothing_stored(server, gid + "-c")


def test_topic_fan_out_over_the_limit_is_refused(server: ServerProcess, busi: BusiServer,
                                                 gid: str) -> None:
    topic = f"fan-{gid}"
    for i in range(20):
        assert get(server, "subscribe", topic=topic, url=f"{busi.url}/TransIn?s={i}").ok
    steps = [{"action": f"topic://{topic}"}] * 3  # 60 rows > 50
    body = {"gid": gid, "trans_type": "msg", "steps": steps, "payloads": ["{}"] * 3}
    refused(post(server, "submit", body), 400,
            "fan out to 60 branches, more than Limits.MaxTopicFanout (50)")
    nothing_stored(server, gid)
    body["steps"], body["payloads"] = steps[:2], ["{}"] * 2
    assert post(server, "submit", body).status_code == 200  # 40 rows is fine


def test_client_errors_are_one_log_line_without_traceback(server: ServerProcess,
                                                          gid: str) -> None:
    refused(get(server, "all", limit="1e20"), 400, "limit")
    refused(post(server, "submit", {"gid": gid, "trans_type": "saga",
                                    "request_timeout": 1e300}), 400, "request_timeout")
    line = "POST /api/dtmsvr/submit 400 request_timeout must be an integer in 0..2147483647"
    eventually(lambda: line in server.log())
    assert "GET /api/dtmsvr/all 400 limit must be an integer in 1..1000" in server.log()
    assert "Traceback" not in server.log()


def test_workflow_steps_count_against_max_branches(server: ServerProcess, gid: str) -> None:
    body = {"gid": gid, "trans_type": "workflow",
            "custom_data": json.dumps({"name": "wf-limit", "data": None})}
    assert post(server, "prepareWorkflow", body).status_code == 200
    with requests.Session() as s:
        def record(branch_id: str, op: str) -> requests.Response:
            return s.post(f"{server.url}/registerBranch", timeout=15, json={
                "gid": gid, "trans_type": "workflow", "branch_id": branch_id, "op": op,
                "status": "succeed", "data": ""})

        for i in range(1000):  # the default MaxBranches: 1,000 steps, two ops each
            for op in ("action", "compensate"):
                assert record(f"{i:04d}", op).status_code == 200
        refused(record("1000", "action"), 400, "has 2000 recorded step ops",
                "Limits.MaxBranches (1000)")
    assert len(get(server, "query", gid=gid).json()["branches"]) == 2000
