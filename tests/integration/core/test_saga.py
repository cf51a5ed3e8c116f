"""Saga against a real server and branch service: the paths DTM's own tests cover."""

from __future__ import annotations

import pytest

from tests.integration.core.conftest import TRANSFER, post, saga_body
from tests.support.busi import BusiServer
from tests.support.server import ServerProcess
from tests.support.util import eventually


def test_saga_normal(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    r = post(server, "submit", saga_body(gid, busi, *TRANSFER))
    assert r.status_code == 200 and r.json() == {"dtm_result": "SUCCESS"}
    q = server.wait_status(gid, "succeed")
    statuses = {(b["branch_id"], b["op"]): b["status"] for b in q["branches"]}
    assert statuses == {("01", "action"): "succeed", ("01", "compensate"): "prepared",
                        ("02", "action"): "succeed", ("02", "compensate"): "prepared"}
    assert busi.state.applied_count("TransOut", gid) == 1
    assert busi.state.applied_count("TransIn", gid) == 1
    assert busi.state.bodies[("TransIn", gid)] == b'{"amount": 30}'


def test_saga_rollback(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    busi.state.set("TransIn", "FAILURE")
    try:
        assert post(server, "submit", saga_body(gid, busi, *TRANSFER)).status_code == 200
        q = server.wait_status(gid, "failed")
    finally:
        busi.state.set("TransIn", "SUCCESS")
    assert "return failed" in q["transaction"]["rollback_reason"]
    st = busi.state
    assert st.count("TransOutRevert", gid) == 1 and st.count("TransInRevert", gid) == 1
    assert st.applied_count("TransOut", gid) == 1 and st.applied_count("TransOutRevert", gid) == 1
    # the failed action never applied, so its compensation is a null compensation
    assert st.applied_count("TransIn", gid) == 0 and st.applied_count("TransInRevert", gid) == 0


def test_saga_wait_result_success_and_failure(server: ServerProcess, busi: BusiServer,
                                              gid: str) -> None:
    r = post(server, "submit", saga_body(gid, busi, *TRANSFER, wait_result=True))
    assert r.status_code == 200
    assert server.status(gid) == "succeed"  # final before the answer, not eventually
    busi.state.set("TransOut", "FAILURE")
    try:
        r = post(server, "submit", saga_body(gid + "f", busi, *TRANSFER, wait_result=True))
    finally:
        busi.state.set("TransOut", "SUCCESS")
    assert r.status_code == 409 and r.json()["dtm_result"] == "FAILURE"
    assert "return failed" in r.json()["message"]
    assert server.status(gid + "f") == "failed"


def test_saga_ongoing_then_success(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    busi.state.set("TransIn", "ONGOING", "ONGOING", "SUCCESS")
    assert post(server, "submit", saga_body(gid, busi, *TRANSFER)).status_code == 200
    server.wait_status(gid, "succeed")
    assert busi.state.count("TransIn", gid) == 3
    assert busi.state.applied_count("TransIn", gid) == 1


def test_saga_branch_errors_recovered_by_poller(server: ServerProcess, busi: BusiServer,
                                                gid: str) -> None:
    busi.state.set("TransOut", "ERROR", "ERROR", "SUCCESS")
    assert post(server, "submit", saga_body(gid, busi, *TRANSFER)).status_code == 200
    q = server.wait_status(gid, "succeed")
    assert busi.state.count("TransOut", gid) == 3
    # RetryInterval 0.2 s, doubled after each error: the retries came >= 0.4 s, then >= 0.8 s
    # after the call before (lower bounds: a loaded machine may be late, never early)
    first, second = busi.state.gaps("TransOut", gid)
    assert first >= 0.37 and second >= 0.77, (first, second)
    # progress resets the interval to the base
    assert q["transaction"]["next_cron_interval"] == 0.2


def test_saga_unreachable_branch_retries_with_visible_reason(server: ServerProcess,
                                                              gid: str) -> None:
    body = {"gid": gid, "trans_type": "saga", "payloads": ["{}"],
            "steps": [{"action": "http://127.0.0.1:1/nothing", "compensate": ""}]}
    assert post(server, "submit", body).status_code == 200

    def backed_off() -> bool:
        # RetryInterval is 0.2 s in tests: after errors the interval has doubled at least twice
        t = server.query(gid)["transaction"]
        return t["status"] == "submitted" and t.get("next_cron_interval", 0) >= 0.8
    eventually(backed_off)
    assert f"{gid} branch 01 action: error" in server.log()
    post(server, "forceStop", {"gid": gid})
    assert server.status(gid) == "failed"


def test_saga_timeout_to_fail(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    busi.state.set("TransIn", "ONGOING")
    try:
        body = saga_body(gid, busi, *TRANSFER, timeout_to_fail=1)
        assert post(server, "submit", body).status_code == 200
        q = server.wait_status(gid, "failed")
    finally:
        busi.state.set("TransIn", "SUCCESS")
    assert "Timeout after 1 seconds" in q["transaction"]["rollback_reason"]
    assert busi.state.applied_count("TransOutRevert", gid) == 1


def test_saga_retry_limit(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    busi.state.set("TransIn", "ERROR")
    try:
        body = saga_body(gid, busi, *TRANSFER, retry_limit=2)
        assert post(server, "submit", body).status_code == 200
        q = server.wait_status(gid, "failed")
    finally:
        busi.state.set("TransIn", "SUCCESS")
    assert "RetryLimit" in q["transaction"]["rollback_reason"]
    assert busi.state.count("TransIn", gid) == 3  # first try + 2 retries


def test_saga_branch_headers(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    body = saga_body(gid, busi, *TRANSFER, branch_headers={"X-Tenant": "t42"})
    assert post(server, "submit", body).status_code == 200
    server.wait_status(gid, "succeed")
    assert busi.state.headers[("TransIn", gid)]["X-Tenant"] == "t42"


def test_saga_request_timeout_is_an_error_then_retried(server: ServerProcess, busi: BusiServer,
                                                       gid: str) -> None:
    busi.state.set("TransIn", "SLEEP:1.5", "SUCCESS")
    body = saga_body(gid, busi, *TRANSFER, request_timeout=1)
    assert post(server, "submit", body).status_code == 200
    server.wait_status(gid, "succeed")
    assert busi.state.count("TransIn", gid) == 2


def test_double_submit(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    body = saga_body(gid, busi, *TRANSFER, wait_result=True)
    assert post(server, "submit", body).status_code == 200
    r = post(server, "submit", body)  # finished: cannot be submitted again
    assert r.status_code == 409 and "succeed" in r.json()["message"]
    assert busi.state.applied_count("TransOut", gid) == 1


def test_concurrent_saga_orders(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    body = saga_body(gid, busi, *TRANSFER, ("TransOut", "TransOutRevert"),
                     custom_data='{"concurrent":true,"orders":{"2":[0,1]}}')
    body["steps"][2]["action"] += "?x=3"  # a distinct URL for the third step
    busi.state.set("TransIn", "SLEEP:0.3")  # step 1 finishes last of the first two
    try:
        assert post(server, "submit", body).status_code == 200
        server.wait_status(gid, "succeed")
    finally:
        busi.state.set("TransIn", "SUCCESS")
    # steps 0 and 1 ran side by side; step 2 only after both had answered
    order = [(r, q.get("x")) for r, _, q in busi.state.requests
             if q.get("gid") == gid and q.get("op") == "action"]
    assert sorted(order[:2], key=str) == [("TransIn", None), ("TransOut", None)]
    assert order[2] == ("TransOut", "3")
    in_started = busi.state.times[("TransIn", gid)][0]
    third_started = busi.state.times[("TransOut", gid)][1]
    assert third_started - in_started >= 0.29


def test_concurrent_saga_rollback(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    busi.state.set("TransIn", "FAILURE")
    try:
        body = saga_body(gid, busi, *TRANSFER, custom_data='{"concurrent":true,"orders":{}}')
        assert post(server, "submit", body).status_code == 200
        server.wait_status(gid, "failed")
    finally:
        busi.state.set("TransIn", "SUCCESS")
    assert busi.state.count("TransOutRevert", gid) == 1
    assert busi.state.count("TransInRevert", gid) == 1


def test_empty_url_branch_is_success(server: ServerProcess, gid: str) -> None:
    body = {"gid": gid, "trans_type": "saga", "steps": [{"action": "", "compensate": ""}],
            "payloads": [""], "wait_result": True}
    assert post(server, "submit", body).status_code == 200


@pytest.mark.parametrize("mutate,status,text", [
    (lambda b: b.pop("gid"), 400, "gid"),
    (lambda b: b.update(gid="g" * 200), 400, "longer"),
    (lambda b: b.update(trans_type="bogus"), 400, "trans_type"),
    (lambda b: b.update(steps=[]), 400, "at least one step"),
    (lambda b: b.update(payloads=[]), 400, "one entry per step"),
    (lambda b: b.update(steps="x"), 400, "steps"),
    (lambda b: b.update(retry_limit="x"), 400, "retry_limit"),
    (lambda b: b.update(custom_data='{"concurrent":true,"orders":{"0":[0]}}'), 400, "cycle"),
])
def test_bad_saga_input(server: ServerProcess, busi: BusiServer, gid: str, mutate: object,
                        status: int, text: str) -> None:
    body = saga_body(gid, busi, *TRANSFER)
    mutate(body)  # type: ignore[operator]
    r = post(server, "submit", body)
    assert r.status_code == status, r.text
    assert text in r.json()["message"]
    assert server.query(gid)["transaction"] is None  # nothing half-stored


def test_malformed_json_and_wrong_method(server: ServerProcess) -> None:
    import requests

    r = requests.post(f"{server.url}/submit", data=b"{not json", timeout=5)
    assert r.status_code == 400 and "malformed JSON" in r.json()["message"]
    r = requests.post(f"{server.url}/submit", data=b"", timeout=5)
    assert r.status_code == 400
    r = requests.post(f"{server.url}/submit", data=b"[1,2]", timeout=5)
    assert r.status_code == 400
    r = requests.get(f"{server.url}/submit", timeout=5)
    assert r.status_code == 405


def branch_statuses(server: ServerProcess, gid: str) -> list[str]:
    return [b["status"] for b in server.query(gid)["branches"]]


def test_concurrent_rollback_order_skips_steps_that_never_ran(server: ServerProcess,
                                                              busi: BusiServer, gid: str) -> None:
    # DTM's TestSagaConRollbackOrder: step 1 waits for step 0, which fails
    busi.state.set("TransOut", "FAILURE")
    try:
        body = saga_body(gid, busi, *TRANSFER, custom_data='{"concurrent":true,"orders":{"1":[0]}}')
        assert post(server, "submit", body).status_code == 200
        server.wait_status(gid, "failed")
    finally:
        busi.state.set("TransOut", "SUCCESS")
    assert branch_statuses(server, gid) == ["succeed", "failed", "prepared", "prepared"]
    assert busi.state.count("TransIn", gid) == 0 and busi.state.count("TransInRevert", gid) == 0


def test_concurrent_rollback_order_compensates_dependents_first(
        server: ServerProcess, busi: BusiServer, gid: str) -> None:
    # DTM's TestSagaConRollbackOrder2: step 1 (after step 0) fails
    busi.state.set("TransIn", "FAILURE")
    try:
        body = saga_body(gid, busi, *TRANSFER, custom_data='{"concurrent":true,"orders":{"1":[0]}}')
        assert post(server, "submit", body).status_code == 200
        q = server.wait_status(gid, "failed")
    finally:
        busi.state.set("TransIn", "SUCCESS")
    assert branch_statuses(server, gid) == ["succeed", "succeed", "succeed", "failed"]
    done = {b["op"] + b["branch_id"]: b["finish_time"] for b in q["branches"]}
    assert done["compensate02"] <= done["compensate01"]


def test_concurrent_committed_ongoing(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    # DTM's TestSagaConCommittedOngoing: one branch ongoing once, the other done
    busi.state.set("TransOut", "ONGOING", "SUCCESS")
    body = saga_body(gid, busi, *TRANSFER, custom_data='{"concurrent":true}')
    assert post(server, "submit", body).status_code == 200
    server.wait_status(gid, "succeed")
    assert branch_statuses(server, gid) == ["prepared", "succeed", "prepared", "succeed"]
    assert busi.state.count("TransIn", gid) == 1  # not called again while TransOut retried
