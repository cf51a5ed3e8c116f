"""The barrier algorithm as pure data and decisions; the drivers that carry it out live apart.

One call of the barrier is an `Attempt`: the rows to insert-ignore (the origin op's row, for a
compensating op, then the current op's row) and, from how many rows each insert added, the
decision whether the business runs. Both the async and the sync driver loop go through here,
so the rules are written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from dtmx.client._consts import Op

# The branch, op and barrier id DTM reserves for a msg's local transaction (DoAndSubmit) and
# its query_prepared check.
MSG_BRANCH_ID = "00"
MSG_BARRIER_ID = "01"

# A compensating op's origin: the op whose effect it undoes. Its row, inserted by the
# compensation when absent, both marks a null compensation and blocks a later (hanging) origin.
# Plain str values: drivers such as asyncpg want exact str, not a str subclass.
ORIGIN_OP: dict[str, str] = {
    Op.CANCEL.value: Op.TRY.value,  # tcc
    Op.COMPENSATE.value: Op.ACTION.value,  # saga
    Op.ROLLBACK.value: Op.ACTION.value,  # workflow
}


@dataclass(frozen=True, slots=True)
class BarrierRow:
    """One row of the barrier table, in the column order of the insert."""

    trans_type: str
    gid: str
    branch_id: str
    op: str
    barrier_id: str
    reason: str

    def values(self) -> tuple[str, str, str, str, str, str]:
        """The insert's values, in `INSERT_COLUMNS` order."""
        return (self.trans_type, self.gid, self.branch_id, self.op, self.barrier_id, self.reason)

    def key(self) -> tuple[str, str, str, str]:
        """The unique key's values, in `KEY_COLUMNS` order."""
        return (self.gid, self.branch_id, self.op, self.barrier_id)


class Decision(Enum):
    """What the barrier does after its inserts."""

    RUN = "run"  # first time for this op: run the business, then commit
    SKIP = "skip"  # null compensation, repeat or hanging request: commit without the business
    DUPLICATED = "duplicated"  # a msg's local transaction seen twice: roll back, report it


@dataclass(frozen=True, slots=True)
class Attempt:
    """The inserts of one barrier call and the rule deciding on their outcome."""

    op: str
    origin: BarrierRow | None
    current: BarrierRow

    @property
    def rows(self) -> tuple[BarrierRow, ...]:
        """Rows to insert-ignore, in order: the origin (if any) first, as DTM does."""
        return (self.current,) if self.origin is None else (self.origin, self.current)

    def decide(self, added: Sequence[int]) -> Decision:
        """Decide from the rows each insert of `rows` added (0 when the row existed)."""
        origin_added = added[0] if self.origin is not None else 0
        current_added = added[-1]
        if self.op == Op.MSG and current_added == 0:
            return Decision.DUPLICATED
        if self.origin is not None and origin_added > 0:
            return Decision.SKIP  # null compensation: the origin never ran
        if current_added == 0:
            return Decision.SKIP  # repeated request, or the origin after its compensation
        return Decision.RUN


def plan_call(trans_type: str, gid: str, branch_id: str, op: str, barrier_id: str) -> Attempt:
    """The attempt for one `call` of the barrier with the given (already bumped) barrier id."""
    origin_op = ORIGIN_OP.get(op)
    origin = None
    if origin_op is not None:
        origin = BarrierRow(trans_type, gid, branch_id, origin_op, barrier_id, op)
    current = BarrierRow(trans_type, gid, branch_id, op, barrier_id, op)
    return Attempt(op=op, origin=origin, current=current)


def msg_rollback_row(trans_type: str, gid: str) -> BarrierRow:
    """The row query_prepared inserts: it wins over a local transaction that never committed."""
    return BarrierRow(
        trans_type, gid, MSG_BRANCH_ID, Op.MSG.value, MSG_BARRIER_ID, Op.ROLLBACK.value
    )
