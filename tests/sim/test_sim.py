"""The deterministic simulation (sim/): a fixed budget of seeds, determinism, and proof
that it finds the bugs it found (or was built for) when they are put back.

The schedules below are replays (`python -m sim --replay`), which depend on the world's
mechanics; if a change to sim/ makes one stop catching its bug, find a new one with the
bug put back (`python -m sim --seeds 3000` prints a shrunk schedule) and paste it here."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dtmx.core import admission, processors
from dtmx.core.admission import Act, Admission, Stored, Take
from dtmx.core.models import Branch, Change, Op, Status, Transaction, TransType
from dtmx.core.plan import Plan, Transition, Wait
from dtmx.core.request import TransRequest
from dtmx.core.timing import Timing
from dtmx.engine import Engine
from dtmx.run import Run
from dtmx.run_write import Writes
from sim.config import Config
from sim.store import MemoryStore
from sim.world import run

ROOT = Path(__file__).resolve().parents[2]
#: seeds the test command explores (the separate command explores many more)
BUDGET = range(int(os.environ.get("DTMX_SIM_SEEDS", "300")))


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def test_a_fixed_budget_of_seeds_holds_every_invariant() -> None:
    failed = {}
    for seed in BUDGET:
        res = run(Config.generate(seed))
        if res.violations:
            failed[seed] = res.violations[:3]
    assert not failed, f"replay with: python -m sim --seed <seed>; {failed}"


def test_the_same_seed_gives_the_same_trace() -> None:
    for seed in (3, 53, 589):
        first, second = run(Config.generate(seed)), run(Config.generate(seed))
        assert len(first.trace) > 5
        assert first.trace == second.trace


def test_the_trace_does_not_depend_on_the_hash_seed() -> None:
    """Across processes too (string hashing is randomized per process)."""
    digests = set()
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-m", "sim", "--seed", "589"], cwd=ROOT, capture_output=True,
            text=True, timeout=60, env={**os.environ, "PYTHONHASHSEED": hash_seed},
            check=True)
        digests.add(out.stdout.split("trace ")[1].split(",")[0])
    assert len(digests) == 1


def test_a_config_survives_its_json() -> None:
    c = Config.generate(7)
    assert Config.from_json(c.to_json()) == c


# Minimal schedules (shrunk by `python -m sim`) that catch each bug when its fix is undone;
# found again when registerBranch became one store call (the schedule moved).
REGISTRATION_RACE = (
    '{"seed":215,"nodes":1,"net_seed":740744956,"txs":[{"kind":"tcc","start":26.901,"step'
    's":2,"seed":1793748137,"wait_result":false,"concurrent":false,"timeout_to_fail":2,"r'
    'etry_limit":0,"failing":[1],"crash_at":-1,"orders":{},"repeat":false}],"crashes":[{"'
    'at":27.963,"node":0,"down":6.245}],"faults":{"refuse":0.0,"drop":0.0,"slow":0.0,"dup'
    '":0.0,"lose_reply":0.1,"transient":0.0,"store":0.0},"outages":[],"skews":[0.0]}')
ABORT_TAKEOVER = (
    '{"seed":5,"nodes":1,"net_seed":777043278,"txs":[{"kind":"tcc","start":8.384,"steps":'
    '3,"seed":3935673377,"wait_result":false,"concurrent":false,"timeout_to_fail":5,"retr'
    'y_limit":0,"failing":[2],"crash_at":-1,"orders":{},"repeat":true}],"crashes":[],"fau'
    'lts":{"refuse":0.0,"drop":0.0,"slow":0.0,"dup":0.0,"lose_reply":0.0,"transient":0.0,'
    '"store":0.0},"outages":[],"skews":[]}')

FORCE_STOP = (
    '{"seed":2,"nodes":1,"net_seed":100685599,"txs":[{"kind":"tcc","start":4.101,"steps":'
    '1,"seed":2191394736,"wait_result":false,"concurrent":false,"timeout_to_fail":3,"retr'
    'y_limit":0,"failing":[0],"crash_at":1,"orders":{},"repeat":false,"force_stop_at":3.0'
    '68}],"crashes":[],"faults":{"refuse":0.0,"drop":0.0,"slow":0.0,"dup":0.0,"lose_reply'
    '":0.0,"transient":0.0,"store":0.0},"outages":[],"skews":[],"jumps":[]}')
REFUSED_WRITE = (
    '{"seed":159,"nodes":2,"net_seed":176113217,"txs":[{"kind":"saga","start":5.602,"step'
    's":1,"seed":2155317227,"wait_result":true,"concurrent":false,"timeout_to_fail":0,"re'
    'try_limit":2,"failing":[0],"crash_at":-1,"orders":{},"repeat":false,"force_stop_at":'
    '-1.0},{"kind":"tcc","start":12.515,"steps":2,"seed":2975766618,"wait_result":false,"'
    'concurrent":false,"timeout_to_fail":3,"retry_limit":0,"failing":[],"crash_at":3,"ord'
    'ers":{},"repeat":false,"force_stop_at":-1.0}],"crashes":[],"faults":{"refuse":0.0,"d'
    'rop":0.0,"slow":0.2,"dup":0.0,"lose_reply":0.0,"transient":0.0,"store":0.0},"outages'
    '":[],"skews":[0.0,0.0],"jumps":[[12.614,1,-35.096]]}')

#: a 35-step plain saga force-stopped while its first batch of successes is written in the
#: background (issue 10)
REFUSED_BACKGROUND_WRITE = (
    '{"seed":59,"nodes":1,"net_seed":1427086828,"txs":[{"kind":"saga","start":19.942,"st'
    'eps":35,"seed":55905719,"wait_result":false,"concurrent":false,"timeout_to_fail":0,"'
    'retry_limit":0,"failing":[],"crash_at":-1,"orders":{},"repeat":false,"force_stop_at"'
    ':0.226}],"crashes":[],"faults":{"refuse":0.0,"drop":0.0,"slow":0.0,"dup":0.0,"lose_r'
    'eply":0.0,"transient":0.0,"store":0.0},"outages":[],"skews":[0.0],"jumps":[]}')

#: a long plain saga whose node is stopped (SIGTERM) while the run waits for its background write
CANCELLED_BEHIND = (
    '{"seed":16812,"nodes":1,"net_seed":2668318171,"txs":[{"kind":"workflow","start":11.9'
    '95,"steps":1,"seed":4195523841,"wait_result":false,"concurrent":false,"timeout_to_fa'
    'il":0,"retry_limit":0,"failing":[],"crash_at":-1,"orders":{},"repeat":false,"force_s'
    'top_at":-1.0,"calm":false},{"kind":"saga","start":12.601,"steps":86,"seed":285420775'
    '6,"wait_result":false,"concurrent":false,"timeout_to_fail":0,"retry_limit":0,"failin'
    'g":[],"crash_at":-1,"orders":{},"repeat":true,"force_stop_at":1.24,"calm":true},{"ki'
    'nd":"workflow","start":13.049,"steps":1,"seed":18968936,"wait_result":false,"concurr'
    'ent":false,"timeout_to_fail":3,"retry_limit":0,"failing":[],"crash_at":-1,"orders":{'
    '},"repeat":false,"force_stop_at":-1.0,"calm":false}],"crashes":[{"at":16.416,"node":'
    '0,"down":13.653,"graceful":true}],"faults":{"refuse":0.0,"drop":0.0,"slow":0.0,"dup"'
    ':0.0,"lose_reply":0.1,"transient":0.0,"store":0.1},"outages":[],"skews":[0.0],"jumps'
    '":[],"presend":0.0,"fast_net":false,"stalls":0.03}')

def test_the_schedules_that_caught_bugs_pass_now() -> None:
    for text in (REGISTRATION_RACE, ABORT_TAKEOVER, FORCE_STOP, REFUSED_WRITE,
                 REFUSED_BACKGROUND_WRITE, CANCELLED_BEHIND):
        assert run(Config.from_json(text)).violations == []


def test_it_finds_the_registration_race_when_the_fix_is_undone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 14's lost cancel: a TCC's timeout that does not read the branches again after
    closing registration misses a branch registered meanwhile."""
    tcc_plan = processors.PLANNERS[TransType.TCC]

    def without_reload(trans: Transaction, branches: Sequence[Branch], now: float,
                       timing: Timing) -> Plan:
        step = tcc_plan(trans, branches, now, timing)
        return replace(step, reload=False) if isinstance(step, Transition) else step

    monkeypatch.setitem(processors.PLANNERS, TransType.TCC, without_reload)
    caught = run(Config.from_json(REGISTRATION_RACE)).violations
    assert any("never got its cancel" in v for v in caught), caught


def test_it_finds_the_abort_takeover_when_the_fix_is_undone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An abort of a TCC already aborting used to take it over from its running owner."""
    abort = admission._RULES[Act.ABORT]

    def taking_over(req: TransRequest, stored: Stored) -> Admission:
        if isinstance(stored, Transaction) and stored.status is Status.ABORTING:
            return Take(stored.status, stored.trans_type, Status.ABORTING, req.rollback_reason)
        return abort(req, stored)

    monkeypatch.setitem(admission._RULES, Act.ABORT, taking_over)
    caught = run(Config.from_json(ABORT_TAKEOVER)).violations
    assert any("two engines at once" in v for v in caught), caught


# Workflows: schedules (shrunk with the fault put back) on which the simulation notices a
# workflow that is never resumed, a resume that misses recorded steps, and a recorded step
# overwritten; each passes as the code is.
WF_NEVER_RESUMED = (
    '{"seed":0,"nodes":1,"net_seed":3562077770,"txs":[{"kind":"workflow","start":17.629,"'
    'steps":1,"seed":1911213317,"wait_result":false,"concurrent":false,"timeout_to_fail":'
    '0,"retry_limit":0,"failing":[],"crash_at":9,"orders":{},"repeat":false}],"crashes":['
    '],"faults":{"refuse":0.0,"drop":0.0,"slow":0.0,"dup":0.0,"lose_reply":0.0,"transient'
    '":0.3,"store":0.0},"outages":[],"skews":[],"jumps":[]}')
WF_RECORDS_MISSED = (
    '{"seed":4,"nodes":1,"net_seed":78114823,"txs":[{"kind":"workflow","start":12.931,"st'
    'eps":2,"seed":692866723,"wait_result":false,"concurrent":false,"timeout_to_fail":2,"'
    'retry_limit":0,"failing":[],"crash_at":-1,"orders":{},"repeat":false}],"crashes":[],'
    '"faults":{"refuse":0.0,"drop":0.0,"slow":0.0,"dup":0.0,"lose_reply":0.0,"transient":'
    '0.3,"store":0.0},"outages":[],"skews":[0.0],"jumps":[]}')
WF_RECORD_OVERWRITTEN = (
    '{"seed":141,"nodes":2,"net_seed":2877389403,"txs":[{"kind":"workflow","start":8.525,'
    '"steps":3,"seed":1392919451,"wait_result":false,"concurrent":false,"timeout_to_fail"'
    ':8,"retry_limit":0,"failing":[],"crash_at":17,"orders":{},"repeat":false}],"crashes"'
    ':[],"faults":{"refuse":0.0,"drop":0.0,"slow":0.0,"dup":0.0,"lose_reply":0.0,"transie'
    'nt":0.0,"store":0.0},"outages":[],"skews":[0.697,0.0],"jumps":[]}')


def test_the_workflow_schedules_pass_now() -> None:
    for text in (WF_NEVER_RESUMED, WF_RECORDS_MISSED, WF_RECORD_OVERWRITTEN):
        assert run(Config.from_json(text)).violations == []


def test_it_finds_a_workflow_never_resumed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A planner that never calls the callback leaves a workflow whose client died
    prepared for ever."""
    monkeypatch.setitem(processors.PLANNERS, TransType.WORKFLOW, lambda *_: Wait())
    caught = run(Config.from_json(WF_NEVER_RESUMED)).violations
    assert any("still prepared after quiescence" in v for v in caught), caught


def test_it_finds_recorded_steps_missing_from_prepare_workflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """prepareWorkflow answering only the actions' records: the replay's check sees a
    commit recorded earlier missing."""
    prepare = Engine.prepare_workflow

    async def actions_only(self: Engine, req: TransRequest
                           ) -> tuple[Transaction, list[Branch]]:
        trans, branches = await prepare(self, req)
        return trans, [b for b in branches if b.op is Op.ACTION]

    monkeypatch.setattr(Engine, "prepare_workflow", actions_only)
    caught = run(Config.from_json(WF_RECORDS_MISSED)).violations
    assert any("missing from prepareWorkflow" in v for v in caught), caught


def test_it_finds_a_recorded_step_overwritten(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that lets a second replay's record replace the first (an upsert instead of
    a refused duplicate): the recorded result changes under the workflow."""
    add = MemoryStore.add_branches

    async def upsert(self: MemoryStore, **kw: Any) -> bool:
        got = self.peek(kw["gid"])
        if got is not None and got[0].status is Status.PREPARED:
            keys = {b.key for b in kw["branches"]}
            got[1][:] = [b for b in got[1] if b.key not in keys]  # the live rows
        return await add(self, **kw)

    monkeypatch.setattr(MemoryStore, "add_branches", upsert)
    caught = run(Config.from_json(WF_RECORD_OVERWRITTEN)).violations
    assert any("recorded twice" in v for v in caught), caught


def test_it_finds_a_force_stop_answered_without_its_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An operator's forceStop that answers success must have failed the transaction."""

    async def unwritten(self: Engine, gid: str) -> None:
        error = admission.force_stop(gid, await self.store.get(gid=gid))
        if error is not None:
            raise error

    monkeypatch.setattr(Engine, "force_stop", unwritten)
    _replay_catches(FORCE_STOP, "force stop answered success, but never written")


def test_it_finds_a_run_going_on_after_a_refused_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run whose compare-and-set write was refused (a force stop, a take-over) stops
    there: no branch call after it."""
    write = Run._write

    async def ignoring_refusal(self: Run, now: float, change: Change) -> bool:
        await write(self, now, change)
        return True

    monkeypatch.setattr(Run, "_write", ignoring_refusal)
    _replay_catches(REFUSED_WRITE, "called after that run's write was refused")


def test_it_finds_a_run_going_on_after_a_refused_background_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain saga's batch written in the background while its next actions are called:
    once that write is refused, the run makes no call after it learned so."""
    caught_up = Run._caught_up

    async def ignoring_refusal(self: Run) -> bool:
        await caught_up(self)
        return True

    monkeypatch.setattr(Run, "_caught_up", ignoring_refusal)
    _replay_catches(REFUSED_BACKGROUND_WRITE, "called after that run's write was refused")


def test_it_finds_results_handed_back_over_a_cancelled_background_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run cancelled (shutdown) while it waits for its background write used to cancel
    that write too, then hand the transaction back with the later results: a hole in the
    stored successes, past which the next run's planner (a binary search over a prefix)
    starts, with more results unwritten at its calls than the run allows."""

    async def cancelling_the_write(self: Writes) -> bool:
        behind, self._behind = self._behind, None
        return True if behind is None else await behind

    monkeypatch.setattr(Writes, "_caught_up", cancelling_the_write)
    _replay_catches(CANCELLED_BEHIND, "earlier results unwritten (at most 65)")

def _replay_catches(schedule: str, violation: str) -> None:
    caught = run(Config.from_json(schedule)).violations
    assert any(violation in v for v in caught), caught
