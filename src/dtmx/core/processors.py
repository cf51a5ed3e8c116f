"""One processor per transaction type, behind one lookup."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dtmx.core import msg, saga, tcc, workflow
from dtmx.core.models import Branch, Op, Outcome, Status, Transaction, TransType
from dtmx.core.plan import Plan, Wait
from dtmx.core.timing import Timing

Planner = Callable[[Transaction, Sequence[Branch], float, Timing], Plan]


PLANNERS: dict[TransType, Planner] = {
    TransType.SAGA: saga.plan,
    TransType.TCC: tcc.plan,
    TransType.XA: tcc.plan,
    TransType.MSG: msg.plan,
    TransType.WORKFLOW: workflow.plan,
}


def plan(trans: Transaction, branches: Sequence[Branch], now: float, timing: Timing) -> Plan:
    """The next step for `trans`; finished transactions always wait forever."""
    if trans.status.finished:
        return Wait()
    return PLANNERS[trans.trans_type](trans, branches, now, timing)


def branch_status(trans_type: TransType, op: Op, outcome: Outcome) -> Status | None:
    """The status a branch op takes after a call; None means "not final, retry later".

    Only a saga action may fail for good (that is what triggers the rollback); a FAILURE from
    any other op (a compensation, a confirm, a msg action) is retried like an error.
    """
    if outcome is Outcome.SUCCESS:
        return Status.SUCCEED
    if outcome is Outcome.FAILURE and trans_type is TransType.SAGA and op is Op.ACTION:
        return Status.FAILED
    return None
