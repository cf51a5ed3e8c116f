"""A msg's planner: the next action of a sequential msg is found by binary search (a step of
a 10,000-branch topic fan-out costs what one of a short msg does), and agrees with the
plain scan in every state a run can reach."""

from __future__ import annotations

import time
from dataclasses import replace

from dtmx.core import msg
from dtmx.core.models import Branch, Status, Transaction, TransType
from dtmx.core.plan import Call, Transition
from dtmx.core.timing import Timing

D = Timing()


def mk(n: int, *, concurrent: bool = False) -> tuple[Transaction, list[Branch]]:
    t = Transaction(gid="g", trans_type=TransType.MSG, status=Status.SUBMITTED, create_time=1)
    t.options = replace(t.options, concurrent=concurrent)
    steps = [{"action": f"http://b/a{i}"} for i in range(n)]
    return t, msg.gen_branches("g", steps, [b""] * n, {}, 1.0)


def test_each_state_of_a_sequential_run_calls_the_first_unfinished_action() -> None:
    n = 7
    for k in range(n + 1):
        t, bs = mk(n)
        for b in bs[:k]:
            b.status = Status.SUCCEED
        want = Transition(Status.SUCCEED) if k == n else Call((bs[k].key,))
        assert msg.plan(t, bs, 2.0, D) == want, k


def test_a_concurrent_msg_calls_every_pending_action() -> None:
    t, bs = mk(4, concurrent=True)
    bs[1].status = Status.SUCCEED
    assert msg.plan(t, bs, 2.0, D) == Call(tuple(b.key for b in (bs[0], bs[2], bs[3])))


def per_step(n: int) -> float:
    t, bs = mk(n)
    start = time.perf_counter()
    for i in range(200):
        msg.plan(t, bs, 2.0, D)
        bs[i].status = Status.SUCCEED
    return (time.perf_counter() - start) / 200


def test_planning_a_step_of_a_wide_fan_out_costs_about_a_short_one() -> None:
    per_step(200)  # warm up
    short = min(per_step(200) for _ in range(5))
    wide = min(per_step(10_000) for _ in range(3))
    assert wide < short * 3 + 20e-6, (short, wide)
