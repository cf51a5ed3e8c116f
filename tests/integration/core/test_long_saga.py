"""A long sequential saga (issue 10): its action successes are written in batches, not one
commit per step (dtmx.core.saga). It still calls every action once and in order, and after a
kill -9 mid-saga the barrier keeps every effect exactly once though some actions whose
success was not yet written are called again."""

from __future__ import annotations

import contextlib
import threading
import uuid

import pytest
import requests

from tests.support.busi import BusiServer, BusiState
from tests.support.server import ServerProcess
from tests.support.services import store_block
from tests.support.util import eventually, free_port

STEPS = 200


def _body(gid: str, busi: BusiServer, **opts: object) -> dict[str, object]:
    return {"gid": gid, "trans_type": "saga", "payloads": ["{}"] * STEPS,
            "steps": [{"action": f"{busi.url}/TransOut",
                       "compensate": f"{busi.url}/TransOutRevert"}] * STEPS, **opts}


def _action_calls(state: BusiState, gid: str) -> list[str]:
    """The branch ids of `gid`'s action calls, in arrival order."""
    with state.lock:
        return [q["branch_id"] for route, _, q in state.requests
                if route == "TransOut" and q.get("gid") == gid]


def _ids() -> list[str]:
    return [f"{i + 1:02d}" for i in range(STEPS)]


@pytest.mark.parametrize("driver", ["sqlite", "redis"])
def test_a_long_saga_calls_every_action_once_in_order(driver: str, tmp_path: object,
                                                      cleanup: contextlib.ExitStack) -> None:
    busi = cleanup.enter_context(BusiServer(free_port()))
    name = f"dtmx_long_{uuid.uuid4().hex[:8]}"
    server = cleanup.enter_context(ServerProcess(store=store_block(driver, name, str(tmp_path))))
    gid = f"long-{uuid.uuid4().hex[:12]}"
    r = requests.post(f"{server.url}/submit", json=_body(gid, busi, wait_result=True),
                      timeout=60)
    assert r.status_code == 200, r.text
    q = server.query(gid)
    assert q["transaction"]["status"] == "succeed"
    assert _action_calls(busi.state, gid) == _ids()
    assert busi.state.applied_count("TransOut", gid) == STEPS
    assert busi.state.count("TransOutRevert", gid) == 0
    # every step's result is stored with (before) the final status
    actions = [b for b in q["branches"] if b["op"] == "action"]
    assert [b["branch_id"] for b in actions] == _ids()
    assert {b["status"] for b in actions} == {"succeed"}


def test_kill_9_mid_long_saga_redoes_unwritten_steps_with_each_effect_once(
        tmp_path: object, cleanup: contextlib.ExitStack) -> None:
    busi = cleanup.enter_context(BusiServer(free_port()))
    busi.state.set("TransOut", "SLEEP:0.01")  # ~2 s of actions: the kill lands mid-saga
    server = cleanup.enter_context(ServerProcess(extra={"LeaseSeconds": 1,
                                                        "RequestTimeout": 0.5}))
    gid = f"longkill-{uuid.uuid4().hex[:12]}"
    answered: list[int] = []

    def submit() -> None:
        with contextlib.suppress(requests.RequestException):  # the kill cuts it off
            answered.append(requests.post(f"{server.url}/submit",
                                          json=_body(gid, busi, wait_result=True),
                                          timeout=60).status_code)

    t = threading.Thread(target=submit)
    t.start()
    try:
        eventually(lambda: len(_action_calls(busi.state, gid)) >= STEPS // 2, timeout=30,
                   interval=0.005)
        server.kill()
    finally:
        t.join(30)
    assert answered == []  # cut off mid-saga, not finished
    called_before = len(_action_calls(busi.state, gid))
    assert called_before < STEPS
    server.start()
    server.wait_status(gid, "succeed", timeout=30)
    calls = _action_calls(busi.state, gid)
    # the successes not yet written when the server died were called again...
    assert len(calls) > len(set(calls)), "no action was called twice: the kill tested nothing"
    # ...from the last written step on, in order; no step was skipped or run out of order
    first_seen = list(dict.fromkeys(calls))
    assert first_seen == _ids()
    redo = calls[called_before:]
    assert redo == sorted(redo, key=int) and redo[-1] == f"{STEPS:02d}"
    # the barrier kept every effect exactly once, and nothing was compensated
    assert busi.state.applied_count("TransOut", gid) == STEPS
    assert busi.state.count("TransOutRevert", gid) == 0
    actions = [b for b in server.query(gid)["branches"] if b["op"] == "action"]
    assert {b["status"] for b in actions} == {"succeed"}


@pytest.mark.parametrize("driver", ["sqlite", "redis"])
def test_a_long_saga_calls_nothing_past_a_failure_or_before_a_late_success(
        driver: str, tmp_path: object, cleanup: contextlib.ExitStack) -> None:
    """The next action goes out the moment the current one succeeds (a Followup, sent
    from the client's callback): never after a FAILURE or an ONGOING, never two at once."""
    busi = cleanup.enter_context(BusiServer(free_port()))
    name = f"dtmx_longf_{uuid.uuid4().hex[:8]}"
    server = cleanup.enter_context(ServerProcess(store=store_block(driver, name, str(tmp_path))))
    # one saga: action 50 answers ONGOING once (retried later), then action 120 fails
    busi.state.set("TransOut", *["SUCCESS"] * 49, "ONGOING", *["SUCCESS"] * 70, "FAILURE")
    gid = f"longf-{uuid.uuid4().hex[:12]}"
    r = requests.post(f"{server.url}/submit", json=_body(gid, busi), timeout=60)
    assert r.status_code == 200, r.text
    server.wait_status(gid, "failed", timeout=60)
    ids = _ids()
    assert _action_calls(busi.state, gid) == ids[:50] + ids[49:120]
    assert busi.state.applied_count("TransOut", gid) == 119
    # compensated from the failed step down, each once
    with busi.state.lock:
        comps = [q["branch_id"] for route, _, q in busi.state.requests
                 if route == "TransOutRevert" and q.get("gid") == gid]
    assert comps == ids[:120][::-1]
    assert busi.state.overlaps == []
    actions = {b["branch_id"]: b["status"] for b in server.query(gid)["branches"]
               if b["op"] == "action"}
    assert [actions[i] for i in ids[:119]] == ["succeed"] * 119
    assert actions[ids[119]] == "failed"
    assert {actions[i] for i in ids[120:]} == {"prepared"}
