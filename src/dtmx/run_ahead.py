"""A plain sequential saga's next action, planned and sent ahead (issue 10).

While action k answers, the run plans step k+1 as if k succeeds (the planner is pure, so
this is only a question) and builds its call. The call carries that plan as a Followup
(dtmx.invoke.base): an invoker that can (HTTP through the keep-alive pool, to the same
host) sends it from the transport's callback the moment k's answer is read and found
SUCCESS, if `_may_follow` says the run would make exactly that call next with nothing to
write first. Otherwise the run, once it has handled k's answer, uses the prepared call
(`_planned`) or plans afresh.

Why this is safe: `_may_follow` asks, at the moment of sending, what the run itself would
decide after recording k's success: the transaction still submitted, the branch list and
the clock leaving the plan as it was (`saga.still_planned`), no background write known to
be refused, no claim extension due, and no write due before the call (the results
unwritten stay within the plan's bound with k's success counted). If the run learns
something else afterwards (a background write refused meanwhile), the call that went out
is one whose result is not used: the same as a crash right after a send, which DTM's
branches must tolerate anyway (they are idempotent; the call is made again later).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from dtmx.clock import Clock
from dtmx.core import processors, saga
from dtmx.core.models import Branch, Op, Status
from dtmx.core.plan import Call
from dtmx.core.timing import lease_running_out
from dtmx.invoke.base import BranchCall, Followup
from dtmx.run_write import Writes


class Ahead(Writes):
    """The planning-ahead part of a run (see the module docstring)."""

    __slots__ = ("_flying", "_follow", "_next", "_sent_at")

    # kept by Run
    branches: list[Branch]
    clock: Clock
    _index_of: list[Branch] | None

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        #: (branch called, the step planned as if it succeeds, that step's call, the
        #: Followup that may send it), made while the branch (_flying) answers
        self._next: tuple[Branch, Call, BranchCall, Followup | None] | None = None
        self._flying: Branch | None = None
        #: the Followup carried by the call in flight (_flying's)
        self._follow: Followup | None = None
        #: when the last Followup went out (its call's start)
        self._sent_at = 0.0

    def _by_key(self) -> dict[tuple[str, Op], Branch]:
        raise NotImplementedError

    def _branch_call(self, b: Branch, then: Followup | None = None) -> BranchCall:
        raise NotImplementedError

    def _sequential_call(self, step: Call, b: Branch, now: float) -> BranchCall:
        """The call of `b`, the one branch of `step`: the one prepared for it (already
        sent, if its Followup went out) or a new one; with a Followup for the step after
        it when the plan allows unwritten results, which is then planned once it is sent."""
        ahead, self._next = self._next, None
        if ahead is not None and ahead[1] is step:
            call, sent_by = ahead[2], ahead[3]
            if sent_by is not None and sent_by.sent is not None and sent_by.call is call:
                call = replace(call, sent=sent_by.sent)  # it went out already
        else:
            call = self._branch_call(b, Followup(self._may_follow) if step.unwritten else None)
        if step.unwritten:
            self._flying = b
            self._follow = call.then
            if call.sent is None:  # once this call is sent
                asyncio.get_running_loop().call_soon(self._plan_ahead, b, now)
            else:  # it is on the wire: the sooner the next is planned, the likelier it
                self._plan_ahead(b, now)  # follows at once (its answer may be quick)
        return call

    def _plan_ahead(self, b: Branch, now: float) -> None:
        """While action `b` answers: plan the next step as if `b` succeeds (the planner,
        pure, asked with `b` succeeded for the moment) and build its call, handed to `b`'s
        Followup, so that a success goes straight to the next send."""
        if self._flying is not b:  # answered already (an invoker that did not wait)
            return
        before, b.status = b.status, Status.SUCCEED
        try:
            step = processors.plan(self.trans, self.branches, now, self.timing)
        finally:
            b.status = before
        if isinstance(step, Call) and len(step.keys) == 1 and step.unwritten:
            call = self._branch_call(self._by_key()[step.keys[0]], Followup(self._may_follow))
            self._next = (b, step, call, self._follow)
            if self._follow is not None:  # the invoker may send it the moment b succeeds
                self._follow.call = call

    def _may_follow(self) -> bool:
        """Asked by the invoker the moment the call in flight has answered SUCCESS, before
        this run has seen the answer: whether the call planned ahead is the one this run
        makes next after that success, with no write before it (the checks of `_planned`
        and of the start of Run._call, with the pending results counted one more). Notes
        the time when true: the call goes out then."""
        ahead, follow = self._next, self._follow
        if ahead is None or follow is None or follow.call is not ahead[2]:
            return False
        t, step = self.trans, ahead[1]
        if t.status is not Status.SUBMITTED or self._index_of is not self.branches \
                or len(self.pending) >= step.unwritten:
            return False
        behind = self._behind  # a refused background write stops the run before a call
        if behind is not None and behind.done() and (
                behind.cancelled() or behind.exception() is not None or not behind.result()):
            return False
        now = self.clock.now()
        if lease_running_out(t, now, self.timing) \
                or not saga.still_planned(t, step, now, self.timing):
            return False
        self._sent_at = now
        return True

    def _planned(self, now: float) -> Call | None:
        """The step planned ahead, if what it assumed holds: its branch succeeded, nothing
        else changed (status, branch list) and the clock leaves the plan as it was."""
        ahead = self._next
        if ahead is None or not (
                ahead[0].status is Status.SUCCEED and self.trans.status is Status.SUBMITTED
                and self._index_of is self.branches
                and saga.still_planned(self.trans, ahead[1], now, self.timing)):
            return None
        return ahead[1]
