"""The simulation's calls sent ahead (dtmx.invoke.base.Followup: a run's next action sent
from the transport's callback the moment the current one answers SUCCESS, before the run
has looked at it): they are made, and the simulation notices when the run's readiness
check (`Run._may_follow`) or the invoker sends one it must not. Each schedule below was
shrunk (`python -m sim`) with its bug put back; see test_sim.py's note on replays."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from dtmx.core.models import Outcome
from dtmx.invoke.base import Followup
from dtmx.run import Run
from sim.config import Config
from sim.world import NodeInvoker, run


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


#: a 133-step plain saga on a fast network whose background write stalls: the call after a full
#: buffer goes out while that write is under way
PAST_THE_BOUND = (
    '{"seed":248,"nodes":1,"net_seed":4100927751,"txs":[{"kind":"saga","start":6.458,"ste'
    'ps":133,"seed":1904751546,"wait_result":false,"concurrent":false,"timeout_to_fail":0'
    ',"retry_limit":0,"failing":[],"crash_at":-1,"orders":{},"repeat":true,"force_stop_at'
    '":0.131,"calm":false}],"crashes":[],"faults":{"refuse":0.0,"drop":0.0,"slow":0.0,"du'
    'p":0.0,"lose_reply":0.0,"transient":0.0,"store":0.0},"outages":[],"skews":[0.0,0.0],'
    '"jumps":[],"presend":1.0,"fast_net":true,"stalls":0.3}')

#: a 68-step plain saga force-stopped at once: its first background write is refused while
#: the next action is out
AFTER_A_REFUSAL = (
    '{"seed":139,"nodes":1,"net_seed":4159669810,"txs":[{"kind":"saga","start":4.207,"ste'
    'ps":68,"seed":4016334431,"wait_result":true,"concurrent":false,"timeout_to_fail":0,"'
    'retry_limit":0,"failing":[],"crash_at":-1,"orders":{},"repeat":false,"force_stop_at"'
    ':0.081,"calm":false}],"crashes":[],"faults":{"refuse":0.0,"drop":0.0,"slow":0.0,"dup'
    '":0.0,"lose_reply":0.0,"transient":0.0,"store":0.0},"outages":[],"skews":[0.0],"jump'
    's":[],"presend":1.0,"fast_net":false,"stalls":0.03}')

#: a 2-step saga whose first action fails for good
AFTER_A_FAILURE = (
    '{"seed":32,"nodes":1,"net_seed":2774849772,"txs":[{"kind":"saga","start":9.474,"step'
    's":2,"seed":4153954553,"wait_result":false,"concurrent":false,"timeout_to_fail":0,"r'
    'etry_limit":0,"failing":[0],"crash_at":-1,"orders":{},"repeat":false,"force_stop_at"'
    ':-1.0,"calm":false}],"crashes":[],"faults":{"refuse":0.0,"drop":0.0,"slow":0.0,"dup"'
    ':0.0,"lose_reply":0.0,"transient":0.0,"store":0.0},"outages":[],"skews":[0.0],"jumps'
    '":[],"presend":1.0,"fast_net":false,"stalls":0.03}')


def test_calls_are_sent_ahead_and_the_schedules_pass() -> None:
    for text in (PAST_THE_BOUND, AFTER_A_REFUSAL, AFTER_A_FAILURE):
        res = run(Config.from_json(text))
        assert res.violations == []
        # (the failing saga's one action fails: nothing is sent ahead unless on FAILURE)
        assert text is AFTER_A_FAILURE or any(line.endswith(" ahead") for line in res.trace)


def test_it_finds_a_call_sent_ahead_past_the_unwritten_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ready with a full buffer of results: the run would wait for the background write
    before its next call (and write the buffer), so the call goes out with one more
    result unwritten than the run allows."""
    may_follow = Run._may_follow

    def ignoring_the_bound(self: Run) -> bool:
        pending, self.pending = self.pending, []
        try:
            return may_follow(self)
        finally:
            self.pending = pending

    monkeypatch.setattr(Run, "_may_follow", ignoring_the_bound)
    _replay_catches(PAST_THE_BOUND, "earlier results unwritten (at most 65)")


def test_it_finds_a_call_sent_ahead_after_a_refused_background_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ready though the background write has answered refused (a force stop): the run
    has learned it and stops; a call sent ahead then is one call too many."""
    may_follow = Run._may_follow

    def ignoring_the_write(self: Run) -> bool:
        behind, self._behind = self._behind, None
        try:
            return may_follow(self)
        finally:
            self._behind = behind

    monkeypatch.setattr(Run, "_may_follow", ignoring_the_write)
    _replay_catches(AFTER_A_REFUSAL, "called after that run's write was refused")


def test_it_finds_a_call_sent_ahead_after_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invoker sending the next action on FAILURE: it takes effect, and the rollback
    (from the step that failed) never undoes it."""
    follow = NodeInvoker._follow

    def on_failure_too(self: NodeInvoker, then: Followup, owner: str, outcome: Outcome
                       ) -> None:
        follow(self, then, owner, Outcome.SUCCESS if outcome is Outcome.FAILURE else outcome)

    monkeypatch.setattr(NodeInvoker, "_follow", on_failure_too)
    _replay_catches(AFTER_A_FAILURE, "its prerequisite 01 never")


def _replay_catches(schedule: str, violation: str) -> None:
    caught = run(Config.from_json(schedule)).violations
    assert any(violation in v for v in caught), caught
