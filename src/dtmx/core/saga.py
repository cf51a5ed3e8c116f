"""Saga: actions in order (or by a dependency graph), compensations in reverse on failure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from dtmx.core.models import Branch, Op, Status, Transaction
from dtmx.core.plan import Call, Plan, Transition, Wait
from dtmx.core.timing import Timing, timeout_reason
from dtmx.errors import BadRequest


@dataclass(slots=True, frozen=True)
class SagaCustom:
    """custom_data of a saga: concurrency and step prerequisites (step -> steps before it)."""

    concurrent: bool = False
    orders: dict[int, tuple[int, ...]] = field(default_factory=dict)


_PLAIN = SagaCustom()


def parse_custom(custom_data: str, n_steps: int | None = None) -> SagaCustom:
    """Parse and (when n_steps is given) validate `{"concurrent":..,"orders":{"1":[0]}}`."""
    if not custom_data:
        return _PLAIN
    try:
        raw = orjson.loads(custom_data)
    except orjson.JSONDecodeError:
        raise BadRequest("custom_data must be JSON text") from None
    if not isinstance(raw, dict):
        raise BadRequest("custom_data must be a JSON object")
    orders: dict[int, tuple[int, ...]] = {}
    raw_orders = raw.get("orders") or {}
    if not isinstance(raw_orders, dict):
        raise BadRequest("custom_data.orders must be an object of step -> [steps]")
    for k, v in raw_orders.items():
        try:
            step = int(k)
        except (TypeError, ValueError):
            raise BadRequest(f"custom_data.orders key {k!r} is not a step index") from None
        if not isinstance(v, list) or not all(isinstance(x, int) for x in v):
            raise BadRequest(f"custom_data.orders[{k}] must be a list of step indexes")
        orders[step] = tuple(v)
    custom = SagaCustom(concurrent=bool(raw.get("concurrent", False)), orders=orders)
    if n_steps is not None:
        _check_orders(custom, n_steps)
    return custom


def _check_orders(custom: SagaCustom, n: int) -> None:
    for step, pres in custom.orders.items():
        for s in (step, *pres):
            if not 0 <= s < n:
                raise BadRequest(f"custom_data.orders refers to step {s}, outside 0..{n - 1}")
    # a cycle would leave steps that can never run
    state: dict[int, int] = {}

    def visit(s: int) -> None:
        if state.get(s) == 1:
            raise BadRequest("custom_data.orders has a cycle")
        if state.get(s) == 2:
            return
        state[s] = 1
        for p in custom.orders.get(s, ()):
            visit(p)
        state[s] = 2

    for s in range(n):
        visit(s)


def gen_branches(
    gid: str, steps: Sequence[dict[str, str]], payloads: Sequence[bytes], now: float
) -> list[Branch]:
    """Each step i becomes branch id %02d(i+1) with a compensate and an action op."""
    out: list[Branch] = []
    for i, step in enumerate(steps):
        bid = f"{i + 1:02d}"
        for op in (Op.COMPENSATE, Op.ACTION):
            out.append(
                Branch(
                    gid=gid,
                    branch_id=bid,
                    op=op,
                    url=step.get(op.value, ""),
                    data=payloads[i],
                    create_time=now,
                    update_time=now,
                )
            )
    return out


def _steps(branches: Sequence[Branch]) -> tuple[list[Branch], list[Branch]]:
    actions = [b for b in branches if b.op is Op.ACTION]
    comps = [b for b in branches if b.op is Op.COMPENSATE]
    return actions, comps


def plan(trans: Transaction, branches: Sequence[Branch], now: float, timing: Timing) -> Plan:
    custom = parse_custom(trans.custom_data)
    concurrent = custom.concurrent or trans.options.concurrent
    actions, comps = _steps(branches)
    n = len(actions)
    if trans.status is Status.SUBMITTED:
        reason = timeout_reason(trans, now, timing)
        if reason:
            return Transition(Status.ABORTING, reason)
        if any(a.status is Status.FAILED for a in actions):
            return Transition(Status.ABORTING)
        if all(a.status is Status.SUCCEED for a in actions):
            return Transition(Status.SUCCEED)
        runnable = [
            a.key for i, a in enumerate(actions) if _may_run(i, actions, custom, concurrent)
        ]
        return Call(tuple(runnable)) if runnable else Wait()
    if trans.status is Status.ABORTING:
        todo = [
            i
            for i in range(n)
            if comps[i].status is Status.PREPARED and _attempted(i, actions, custom, concurrent)
        ]
        if not todo:
            return Transition(Status.FAILED)
        ready = [
            comps[i].key
            for i in reversed(todo)
            if _may_compensate(i, todo, custom, concurrent)
        ]
        return Call(tuple(ready), decided=True) if ready else Wait()
    return Wait()


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


def _may_compensate(i: int, todo: Sequence[int], custom: SagaCustom, concurrent: bool) -> bool:
    """Compensate step i only after every pending step that ran after it is compensated."""
    later = (
        [s for s, pres in custom.orders.items() if i in pres]
        if concurrent
        else [j for j in todo if j > i]
    )
    return not any(j in todo for j in later)
