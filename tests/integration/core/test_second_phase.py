"""Second-phase calls (compensate, confirm, cancel, XA commit/rollback, msg actions) that
answer ERROR, ONGOING or FAILURE, on every store.

What DTM does (dtmsvr/trans_status.go, getBranchResult): only a saga *action* can fail a
transaction; FAILURE from any other op is an error like a 500 and is retried with backoff;
ONGOING is retried without backoff. The transaction stays in its phase meanwhile (aborting
while compensating or cancelling, submitted while confirming or committing) and every
effect is applied once. One difference, named in `test_ongoing_returns_to_the_base_interval`:
after ONGOING DTM keeps whatever interval the backoff had reached; dtmx goes back to the
base interval, since an ONGOING answer is progress (the branch is alive and working).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.integration.core.conftest import TRANSFER, post, saga_body
from tests.support.busi import BusiServer
from tests.support.server import ServerProcess
from tests.support.util import eventually

ANSWERS = ("ERROR", "ONGOING", "FAILURE", "SUCCESS")


@dataclass(frozen=True)
class Phase:
    """A way to reach a second-phase call of `route` with the transaction in `middle`."""

    name: str
    route: str
    middle: str  # status while the call is retried
    final: str
    start: Callable[[ServerProcess, BusiServer, str], None]


def _saga_compensate(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    busi.state.set("TransIn", "FAILURE")
    assert post(server, "submit", saga_body(gid, busi, *TRANSFER)).status_code == 200


def _two_phase(trans_type: str, end: str) -> Callable[[ServerProcess, BusiServer, str], None]:
    def start(server: ServerProcess, busi: BusiServer, gid: str) -> None:
        assert post(server, "prepare", {"gid": gid, "trans_type": trans_type}).status_code == 200
        for bid, side in (("01", "TransOut"), ("02", "TransIn")):
            body = {"gid": gid, "branch_id": bid, "trans_type": trans_type, "data": "{}"}
            if trans_type == "tcc":
                body |= {"confirm": f"{busi.url}/{side}Confirm",
                         "cancel": f"{busi.url}/{side}Cancel"}
            else:
                body["url"] = f"{busi.url}/{side}"
            r = post(server, "registerBranch", body)
            assert r.status_code == 200, r.text
        assert post(server, end, {"gid": gid, "trans_type": trans_type}).status_code == 200
    return start


def _msg_action(server: ServerProcess, busi: BusiServer, gid: str) -> None:
    body = {"gid": gid, "trans_type": "msg", "payloads": ["{}", "{}"],
            "steps": [{"action": f"{busi.url}/TransOut"}, {"action": f"{busi.url}/TransIn"}]}
    assert post(server, "submit", body).status_code == 200


PHASES = [
    Phase("saga-compensate", "TransOutRevert", "aborting", "failed", _saga_compensate),
    Phase("tcc-confirm", "TransOutConfirm", "submitted", "succeed", _two_phase("tcc", "submit")),
    Phase("tcc-cancel", "TransOutCancel", "aborting", "failed", _two_phase("tcc", "abort")),
    Phase("xa-commit", "TransOut", "submitted", "succeed", _two_phase("xa", "submit")),
    Phase("xa-rollback", "TransOut", "aborting", "failed", _two_phase("xa", "abort")),
    Phase("msg-action", "TransIn", "submitted", "succeed", _msg_action),
]


@pytest.mark.parametrize("phase", PHASES, ids=lambda p: p.name)
def test_second_phase_error_ongoing_failure_are_retried(
    server: ServerProcess, busi: BusiServer, gid: str, phase: Phase
) -> None:
    busi.state.set(phase.route, *ANSWERS)
    try:
        phase.start(server, busi, gid)
        # the phase holds while the call is retried: observed after the first answer
        eventually(lambda: busi.state.count(phase.route, gid) >= 1)
        assert server.status(gid) in (phase.middle, phase.final)
        eventually(lambda: busi.state.count(phase.route, gid) in (2, 3))
        assert server.status(gid) == phase.middle
        q = server.wait_status(gid, phase.final)
    finally:
        busi.state.set(phase.route, "SUCCESS")
        busi.state.set("TransIn", "SUCCESS")
    assert busi.state.count(phase.route, gid) == len(ANSWERS)
    assert busi.state.applied_count(phase.route, gid) <= 1
    ops = {(b["branch_id"], b["op"]): b["status"] for b in q["branches"]}
    second_op = {"saga-compensate": "compensate", "tcc-confirm": "confirm",
                 "tcc-cancel": "cancel", "xa-commit": "commit", "xa-rollback": "rollback",
                 "msg-action": "action"}[phase.name]
    bid = "02" if phase.name == "msg-action" else "01"
    assert ops[(bid, second_op)] == "succeed"
    if phase.name == "saga-compensate":
        # DTM's TestSagaFailed: a compensation error, then the cron finishes the rollback
        assert ops == {("01", "action"): "succeed", ("01", "compensate"): "succeed",
                       ("02", "action"): "failed", ("02", "compensate"): "succeed"}


def _interval(server: ServerProcess, gid: str) -> float:
    return float(server.query(gid)["transaction"]["next_cron_interval"])


def test_ongoing_returns_to_the_base_interval(server: ServerProcess, busi: BusiServer,
                                              gid: str) -> None:
    """RetryInterval is 0.2 s here. Errors double it (0.4, 0.8); ONGOING sets it back to
    0.2 (DTM would keep 0.8: it treats ONGOING as "no news"); FAILURE of a compensation is
    an error again (0.4)."""
    busi.state.set("TransOutRevert", "ERROR", "ERROR", "ONGOING", "ONGOING", "FAILURE",
                   "SUCCESS")
    try:
        _saga_compensate(server, busi, gid)
        seen: list[float] = []
        for expected in (0.4, 0.8, 0.2, 0.4):
            eventually(lambda e=expected: _interval(server, gid) == e, timeout=5, interval=0.01)
            seen.append(expected)
        server.wait_status(gid, "failed")
    finally:
        busi.state.set("TransOutRevert", "SUCCESS")
        busi.state.set("TransIn", "SUCCESS")
    assert seen == [0.4, 0.8, 0.2, 0.4]
    gaps = busi.state.gaps("TransOutRevert", gid)
    # each retry waited its interval (lower bounds only: a loaded machine may be late)
    waited = [g >= e - 0.03 for g, e in zip(gaps, (0.4, 0.8, 0.2, 0.2, 0.4), strict=True)]
    assert waited == [True] * 5, gaps
