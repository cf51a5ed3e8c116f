"""Saga: actions in order (or by a dependency graph), compensations in reverse on failure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from dtmx.core.custom import custom_object
from dtmx.core.models import Branch, Op, Status, Transaction
from dtmx.core.plan import Call, Plan, Transition, Wait
from dtmx.core.timing import Timing, timeout_of, timeout_reason
from dtmx.errors import BadRequest


@dataclass(slots=True, frozen=True)
class SagaCustom:
    """custom_data of a saga: concurrency and step prerequisites (step -> steps before it)."""

    concurrent: bool = False
    orders: dict[int, tuple[int, ...]] = field(default_factory=dict)


_PLAIN = SagaCustom()


def parse_custom(custom_data: str) -> SagaCustom:
    """Parse `{"concurrent":..,"orders":{"1":[0]}}` (`check_orders` validates it). The
    result is shared: callers never change it."""
    if not custom_data:
        return _PLAIN
    return _parse_custom(custom_data)


@lru_cache(maxsize=64)
def _parse_custom(custom_data: str) -> SagaCustom:
    # planned before every step of a run: a saga of 1,000 ordered steps parsed its orders
    # 1,000 times (a fifth of its planning time); a str's hash is kept, so a hit is cheap
    raw = custom_object(custom_data)
    orders: dict[int, tuple[int, ...]] = {}
    raw_orders = raw.get("orders") or {}
    if not isinstance(raw_orders, dict):
        raise BadRequest("custom_data.orders must be an object of step -> [steps]")
    for k, v in raw_orders.items():
        if not (isinstance(k, str) and k.isdecimal() and len(k) <= 9):
            raise BadRequest(f"custom_data.orders key {k[:20]!r} is not a step index")
        if not isinstance(v, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in v
        ):
            raise BadRequest(f"custom_data.orders[{k}] must be a list of step indexes")
        orders[int(k)] = tuple(v)
    return SagaCustom(concurrent=bool(raw.get("concurrent", False)), orders=orders)


def check_orders(custom: SagaCustom, n: int, max_edges: int) -> None:
    """Every step index in 0..n-1, at most `max_edges` edges, and no cycle (a cycle would
    leave steps that can never run). Iterative: a chain of any length is fine."""
    if not custom.orders:  # no edges: nothing out of range, no cycle (most sagas)
        return
    edges = sum(len(p) for p in custom.orders.values())
    if edges > max_edges:
        raise BadRequest(
            f"custom_data.orders has {edges} edges, more than Limits.MaxOrderEdges ({max_edges})"
        )
    for step, pres in custom.orders.items():
        for s in (step, *pres):
            if not 0 <= s < n:
                raise BadRequest(f"custom_data.orders refers to step {s}, outside 0..{n - 1}")
    # Kahn's algorithm: peel off steps without prerequisites; what is left is on a cycle
    waiting = {s: len(set(p)) for s, p in custom.orders.items()}
    after: dict[int, list[int]] = {}
    for s, pres in custom.orders.items():
        for p in set(pres):
            after.setdefault(p, []).append(s)
    ready = [s for s in range(n) if not waiting.get(s)]
    done = 0
    while ready:
        s = ready.pop()
        done += 1
        for nxt in after.get(s, ()):
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    if done < n:
        raise BadRequest("custom_data.orders has a cycle")


def gen_branches(
    gid: str, steps: Sequence[dict[str, str]], payloads: Sequence[bytes], now: float
) -> list[Branch]:
    """Each step i becomes branch id %02d(i+1) with a compensate and an action op."""
    out: list[Branch] = []
    prepared = Status.PREPARED
    for i, step in enumerate(steps):
        bid = f"{i + 1:02d}"
        data = payloads[i]
        # positional, and the op's wire name without the enum's property: this runs for
        # every step of every saga submitted (4.2 -> 1.6 us for two steps)
        for op, name in _OPS:
            out.append(Branch(gid, bid, op, step.get(name, ""), data, prepared, now, now))
    return out


#: a step's ops in the order their rows are created, with the step key naming each URL
_OPS = ((Op.COMPENSATE, Op.COMPENSATE.value), (Op.ACTION, Op.ACTION.value))


def _steps(branches: Sequence[Branch]) -> tuple[list[Branch], list[Branch]]:
    actions = [b for b in branches if b.op is Op.ACTION]
    comps = [b for b in branches if b.op is Op.COMPENSATE]
    return actions, comps


def plan(trans: Transaction, branches: Sequence[Branch], now: float, timing: Timing) -> Plan:
    """A saga's next step: actions in order (or by their graph), or compensations after a failure
    or timeout.
    """
    custom = parse_custom(trans.custom_data)
    concurrent = custom.concurrent or trans.options.concurrent
    if trans.status is Status.SUBMITTED:
        reason = timeout_reason(trans, now, timing)
        if reason:
            return Transition(Status.ABORTING, reason)
    if not concurrent and _laid_out(branches):
        return _plan_sequential(trans.status, branches, _unwritten(trans, now, timing))
    return _plan_general(trans.status, branches, custom, concurrent)


# Unwritten successes (issue 10: a step must cost less than one commit). A plain sequential
# saga's action results are written once per batch of steps, not before every next action:
# the success of action i may still be unwritten when action i+1 is called. Why that is
# safe, and only for a saga that has neither timeout_to_fail nor retry_limit:
# - A success lost in a crash (or with a lost claim) leaves that action `prepared` in the
#   store, so the next run calls it again. Actions are idempotent (DTM's rule; the barrier
#   makes them so): a repeated action that had succeeded answers success again, without a
#   second effect. The next run therefore walks the stored prefix up to the true frontier
#   (the one action that may have been in flight) before it can learn anything new, and
#   whatever it decides from there is what the crashed run would have decided.
# - Such a saga leaves `submitted` only through an answer of an action: FAILURE
#   (-> aborting) or the last success (-> succeed). Both are written as the transition, in
#   the same atomic store write as every unwritten result before them, so a failure is
#   durable before any compensation, and every step's result before the final status (and
#   so before the final answer to wait_result).
# - A timeout or a retry limit could abort a saga on the clock, in a run that has not
#   walked that prefix again: it would compensate from the stored frontier and miss the
#   actions called past it. Those sagas (and concurrent ones, whose compensation set
#   depends on which actions ran) keep the strict rule: results written before the next
#   action is called.
# The batch is bounded in steps and in time since the last write, which bounds the work
# redone after a crash and how stale /query's branch statuses may be while the saga runs.
# A full batch is written in the background while the next actions are called (dtmx.run:
# one batch at a time, so at most 2 * UNWRITTEN_STEPS + 1 are unwritten at a call, which
# the simulation checks): its
# successes stay unwritten until that write answers, which the argument above allows, and
# a run whose write was refused stops before its next call once it learns so.
#: most successes of a plain sequential saga left unwritten when its next action is called
UNWRITTEN_STEPS = 32
#: ... and only while the last write is more recent than this (seconds)
UNWRITTEN_SECONDS = 1.0


def _unwritten(trans: Transaction, now: float, timing: Timing) -> int:
    if timeout_of(trans, timing) or trans.options.retry_limit:
        return 0
    if now - trans.update_time >= UNWRITTEN_SECONDS:
        return 0
    return UNWRITTEN_STEPS


def still_planned(trans: Transaction, step: Call, now: float, timing: Timing) -> bool:
    """Whether `step`, planned for this saga (still submitted, its branches as they were
    then) at an earlier time, is what `plan` gives at `now` too. Only a step with unwritten
    results allowed qualifies: its saga has no timeout (see _unwritten), so the clock
    changes its plan only through the unwritten bound."""
    return step.unwritten > 0 and _unwritten(trans, now, timing) == step.unwritten


# A sequential saga's branches are stored as gen_branches made them: step i is
# branches[2i] (compensate) and branches[2i+1] (action). Its actions succeed strictly in
# order and its compensations in reverse, so every status list is sorted and the next step
# is found by binary search: planning a step costs O(log n), not O(n), whatever the length.


def _laid_out(branches: Sequence[Branch]) -> bool:
    n2 = len(branches)
    if n2 % 2 or not n2:
        return False
    # the ends and the middle: a cheap check that this is gen_branches' layout
    for i in (0, (n2 // 2 - 1) // 2 * 2, n2 - 2):
        comp, action = branches[i], branches[i + 1]
        if (comp.op is not Op.COMPENSATE or action.op is not Op.ACTION
                or comp.branch_id != action.branch_id):
            return False
    return True


def _first(n: int, pred: Callable[[int], bool]) -> int:
    """The first i in 0..n-1 with pred(i), for a pred false then true; n if none."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _first_unsucceeded_action(branches: Sequence[Branch], n: int) -> int:
    """`_first` for "action i has not succeeded", inline: planned before every step."""
    lo, hi = 0, n
    succeed = Status.SUCCEED
    while lo < hi:
        mid = (lo + hi) // 2
        if branches[2 * mid + 1].status is not succeed:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _plan_sequential(status: Status, branches: Sequence[Branch], unwritten: int) -> Plan:
    n = len(branches) // 2
    # k: the first action that has not succeeded (all before it have)
    k = _first_unsucceeded_action(branches, n)
    if status is Status.SUBMITTED:
        if k == n:
            return Transition(Status.SUCCEED)
        action = branches[2 * k + 1]
        if action.status is Status.FAILED:
            return Transition(Status.ABORTING)
        return Call((action.key,), unwritten=unwritten)
    if status is Status.ABORTING:
        # steps 0..k may have run (k itself may have taken effect before failing or timing
        # out); they are compensated from the top, so their compensations are
        # prepared up to some c and succeeded above it
        top = min(k, n - 1)
        c = _first(top + 1, lambda i: branches[2 * i].status is not Status.PREPARED) - 1
        if c < 0:
            return Transition(Status.FAILED)
        return Call((branches[2 * c].key,), decided=True)
    return Wait()


def _plan_general(
    status: Status, branches: Sequence[Branch], custom: SagaCustom, concurrent: bool
) -> Plan:
    actions, comps = _steps(branches)
    n = len(actions)
    if status is Status.SUBMITTED:
        if any(a.status is Status.FAILED for a in actions):
            return Transition(Status.ABORTING)
        if all(a.status is Status.SUCCEED for a in actions):
            return Transition(Status.SUCCEED)
        runnable = [
            a.key for i, a in enumerate(actions) if _may_run(i, actions, custom, concurrent)
        ]
        return Call(tuple(runnable)) if runnable else Wait()
    if status is Status.ABORTING:
        todo = [
            i
            for i in range(n)
            if comps[i].status is Status.PREPARED and _attempted(i, actions, custom, concurrent)
        ]
        if not todo:
            return Transition(Status.FAILED)
        pending = set(todo)
        later = _dependents(custom) if concurrent else {}
        ready = [
            comps[i].key
            for i in reversed(todo)
            if not any(j in pending for j in later.get(i, ()))
            and (concurrent or i == todo[-1])
        ]
        return Call(tuple(ready), decided=True) if ready else Wait()
    return Wait()


def _dependents(custom: SagaCustom) -> dict[int, list[int]]:
    """step -> the steps that list it as a prerequisite (they ran after it)."""
    out: dict[int, list[int]] = {}
    for s, pres in custom.orders.items():
        for p in pres:
            out.setdefault(p, []).append(s)
    return out


def _prereqs(i: int, custom: SagaCustom, concurrent: bool) -> tuple[int, ...]:
    if concurrent:
        return custom.orders.get(i, ())
    return (i - 1,) if i > 0 else ()


def _may_run(i: int, actions: Sequence[Branch], custom: SagaCustom, concurrent: bool) -> bool:
    if actions[i].status is not Status.PREPARED:
        return False
    return all(actions[p].status is Status.SUCCEED for p in _prereqs(i, custom, concurrent))


def _attempted(i: int, actions: Sequence[Branch], custom: SagaCustom, concurrent: bool) -> bool:
    """Whether action i may have run: finished, or all its prerequisites succeeded.

    An action whose call timed out or was cut off by a crash is still `prepared`, yet it may
    have taken effect; its compensation must run (the barrier makes a null one harmless).
    """
    if actions[i].status is not Status.PREPARED:
        return True
    return all(actions[p].status is Status.SUCCEED for p in _prereqs(i, custom, concurrent))
