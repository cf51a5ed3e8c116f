"""TCC and XA: the client registers branches; the server confirms or cancels them all.

Second-phase ops run one at a time. TCC goes in reverse registration order, so that nested
branches (registered after their parent) are finished before the parent; XA goes in
registration order, as DTM does (its branches are independent local XA transactions).
"""

from __future__ import annotations

from collections.abc import Sequence

from dtmx.core.models import Branch, Op, Status, Transaction, TransType
from dtmx.core.plan import Call, Plan, Transition, Wait
from dtmx.core.timing import Timing, timeout_of, timeout_reason

SECOND_PHASE = {
    TransType.TCC: (Op.CONFIRM, Op.CANCEL),
    TransType.XA: (Op.COMMIT, Op.ROLLBACK),
}


def plan(trans: Transaction, branches: Sequence[Branch], now: float, timing: Timing) -> Plan:
    """A TCC's or XA's next step: time out a prepared one, then the second phase."""
    forward, backward = SECOND_PHASE[trans.trans_type]
    if trans.status is Status.PREPARED:
        reason = timeout_reason(trans, now, timing)
        if reason:
            return Transition(Status.ABORTING, reason, reload=True)
        return Wait(trans.create_time + timeout_of(trans, timing))
    if trans.status is Status.SUBMITTED:
        op, final = forward, Status.SUCCEED
    elif trans.status is Status.ABORTING:
        op, final = backward, Status.FAILED
    else:
        return Wait()
    ordered = reversed(branches) if trans.trans_type is TransType.TCC else iter(branches)
    for b in ordered:
        if b.op is op and b.status is Status.PREPARED:
            return Call((b.key,), decided=True)
    return Transition(final)


def gen_registered(
    trans_type: TransType, gid: str, branch_id: str, data: bytes, urls: dict[str, str], now: float
) -> list[Branch]:
    """The branch ops one registerBranch creates: tcc cancel+confirm, xa rollback+commit."""
    if trans_type is TransType.TCC:
        ops = [(Op.CANCEL, urls.get("cancel", "")), (Op.CONFIRM, urls.get("confirm", ""))]
    else:
        url = urls.get("url", "")
        ops = [(Op.ROLLBACK, url), (Op.COMMIT, url)]
    return [
        Branch(
            gid=gid,
            branch_id=branch_id,
            op=op,
            url=url,
            data=data,
            create_time=now,
            update_time=now,
        )
        for op, url in ops
    ]
