"""Saga planning costs the same per step whatever the saga's length, and agrees with the
general planner on every state a sequential saga can be in."""

from __future__ import annotations

import time

import pytest

from dtmx.core import saga
from dtmx.core.models import Branch, Op, Status, Transaction, TransOptions, TransType
from dtmx.core.plan import Call
from dtmx.core.timing import Timing
from dtmx.errors import BadRequest

D = Timing(timeout_to_fail=35)


def mk(n: int) -> tuple[Transaction, list[Branch]]:
    t = Transaction(gid="g", trans_type=TransType.SAGA, status=Status.SUBMITTED, create_time=1)
    steps = [{"action": f"a{i}", "compensate": f"c{i}"} for i in range(n)]
    return t, saga.gen_branches("g", steps, [b""] * n, 1.0)


def sequential_states(n: int) -> list[tuple[Status, list[Status], list[Status]]]:
    """Every (global, action statuses, compensation statuses) a sequential run can reach."""
    out = []
    for k in range(n + 1):  # actions 0..k-1 succeeded
        for kth in (Status.PREPARED, Status.FAILED) if k < n else (None,):
            acts = [Status.SUCCEED] * k + ([kth] if kth else []) + [Status.PREPARED] * (n - k - 1)
            acts = acts[:n]
            out.append((Status.SUBMITTED, acts, [Status.PREPARED] * n))
            top = min(k, n - 1)
            for c in range(-1, top + 1):  # compensations above c done
                comps = [Status.PREPARED] * n
                for j in range(c + 1, top + 1):
                    comps[j] = Status.SUCCEED
                out.append((Status.ABORTING, acts, comps))
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_fast_path_agrees_with_the_general_planner(n: int) -> None:
    for status, acts, comps in sequential_states(n):
        t, bs = mk(n)
        t.status = status
        for i in range(n):
            bs[2 * i].status, bs[2 * i + 1].status = comps[i], acts[i]
        fast = saga.plan(t, bs, 2.0, D)
        general = saga._plan_general(status, bs, saga.SagaCustom(), False)
        assert fast == general, (status, acts, comps)


def per_step(n: int) -> float:
    t, bs = mk(n)
    start = time.perf_counter()
    rounds = 0
    for i in range(min(n, 200)):
        saga.plan(t, bs, 2.0, D)
        bs[2 * i + 1].status = Status.SUCCEED
        rounds += 1
    return (time.perf_counter() - start) / rounds


def test_planning_a_step_of_a_long_saga_costs_about_a_short_one() -> None:
    per_step(2)  # warm up
    short = min(per_step(2) for _ in range(5))
    long = min(per_step(10_000) for _ in range(3))
    # O(log n): a 10,000-step saga plans a step within a few times a 2-step one's cost
    assert long < short * 5 + 20e-6, (short, long)


def test_a_long_reverse_chain_of_orders_is_checked_without_recursion() -> None:
    n = 5000
    orders = ",".join(f'"{i}":[{i + 1}]' for i in range(n - 1))
    custom = saga.parse_custom(f'{{"concurrent":true,"orders":{{{orders}}}}}')
    saga.check_orders(custom, n, 10_000)
    cyclic = saga.parse_custom(f'{{"orders":{{{orders},"{n - 1}":[0]}}}}')
    with pytest.raises(BadRequest, match="cycle"):
        saga.check_orders(cyclic, n, 10_000)
    with pytest.raises(BadRequest, match="MaxOrderEdges"):
        saga.check_orders(custom, n, 100)


def _next_action(t: Transaction, bs: list[Branch], now: float) -> Call:
    step = saga.plan(t, bs, now, D)
    assert isinstance(step, Call) and step.keys[0] == ("02", Op.ACTION), step
    return step


def test_a_plain_sequential_saga_lets_successes_stay_unwritten_for_a_while() -> None:
    """Issue 10: less than one write per step, only where no clock can abort the saga."""
    t, bs = mk(3)
    t.update_time = 10.0
    bs[1].status = Status.SUCCEED
    assert _next_action(t, bs, 10.5).unwritten == saga.UNWRITTEN_STEPS
    # the batch is bounded in time since the last write, too
    assert _next_action(t, bs, 10.0 + saga.UNWRITTEN_SECONDS).unwritten == 0
    # a clock may abort these: every success is written before the next action
    for options in (TransOptions(timeout_to_fail=60), TransOptions(retry_limit=3),
                    TransOptions(concurrent=True)):
        t.options = options
        assert _next_action(t, bs, 10.5).unwritten == 0, options
    # compensations are decided: nothing changes for them
    t.options, t.status = TransOptions(), Status.ABORTING
    assert saga.plan(t, bs, 10.5, D) == Call((("02", Op.COMPENSATE),), decided=True)


def test_a_step_planned_ahead_still_holds_only_while_the_clock_leaves_it_as_it_was() -> None:
    """The run plans the next action while the current one answers (issue 10); that plan is
    used only while `plan` at the later time would give the same step."""
    t, bs = mk(3)
    t.update_time = 10.0
    bs[1].status = Status.SUCCEED
    ahead = _next_action(t, bs, 10.1)
    assert saga.still_planned(t, ahead, 10.5, D)
    assert saga.plan(t, bs, 10.5, D) == ahead
    # past the time bound the plan writes first: the step planned ahead no longer holds
    late = 10.0 + saga.UNWRITTEN_SECONDS
    assert not saga.still_planned(t, ahead, late, D)
    assert saga.plan(t, bs, late, D) != ahead
    # a step that lets nothing stay unwritten (a clock may abort its saga) is never reused
    t.options = TransOptions(timeout_to_fail=60)
    assert not saga.still_planned(t, _next_action(t, bs, 10.1), 10.1, D)
