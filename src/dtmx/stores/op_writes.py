"""How an update's branch statuses and calls fall on the rows of a store that keeps each
branch op's first call with the op (SQL: the `trans_branch_op` row; Redis: the branch
hash) and the later calls in a history of their own. Pure; shared by the stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtmx.core.models import CallRecord, Change, Op, Status


@dataclass(slots=True)
class OpWrite:
    """What one update writes into one branch op's row: a new status (None: kept), the first
    call (attempt 1, None: none in this update) and the number of calls stored (None:
    kept)."""

    branch_id: str
    op: Op
    status: Status | None = None
    first: CallRecord | None = None
    count: int | None = None


def op_writes(change: Change) -> tuple[list[OpWrite], list[CallRecord]]:
    """The branch-row writes of `change` (one per op, statuses first, in change order)
    and the calls for the history (numbered from 2, or 0: the store numbers them)."""
    ops: dict[tuple[str, Op], OpWrite] = {}
    for b in change.branches:
        ops[(b.branch_id, b.op)] = OpWrite(b.branch_id, b.op, b.status)
    history: list[CallRecord] = []
    for c in change.calls:
        if c.attempt == 0:
            history.append(c)
            continue
        w = ops.get((c.branch_id, c.op))
        if w is None:
            w = ops[(c.branch_id, c.op)] = OpWrite(c.branch_id, c.op)
        if c.attempt == 1:
            w.first = c
        else:
            history.append(c)
        w.count = max(w.count or 0, c.attempt)
    return list(ops.values()), history
