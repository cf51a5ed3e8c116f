"""What a processor decides: the engine's next step for one transaction.

Processors are pure: they look at the transaction, its branches and the time, and return one
of these. The engine carries the plan out (calls, writes), feeds the results back and asks
again, until the plan is to wait or the transaction is finished.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtmx.core.models import Op, Status


@dataclass(slots=True, frozen=True)
class Call:
    """Call these branch ops now, concurrently; keys are (branch_id, op).

    `decided`: the transaction's outcome is settled (TCC/XA second phase, saga
    compensation), so no answer of these calls can change its course; every one of them is
    retried until it succeeds, and each branch is idempotent (the barrier). Results of
    earlier calls then need not be stored before these calls are made: they may ride on a
    later write. Before a call that can still change the course (a saga action), they must,
    except:

    `unwritten`: up to this many results of earlier calls may still be unwritten when these
    calls are made (they ride on a later write; past that many, the run writes them in
    the background while these calls go on, one such write at a time). Only for calls
    whose transaction cannot change course but by an answer of a call (see
    `dtmx.core.saga`), where losing an unwritten success in a crash only means that call
    is made again.
    """

    keys: tuple[tuple[str, Op], ...]
    decided: bool = False
    unwritten: int = 0


@dataclass(slots=True, frozen=True)
class QueryPrepared:
    """Ask the msg's query_prepared URL whether the local transaction committed."""


@dataclass(slots=True, frozen=True)
class Resume:
    """Call a prepared workflow's callback (query_prepared) with branch_id 00, `op` = the
    workflow's name and its input `data`, so its client replays it. Whatever the answer,
    the status is left alone: the client's own submit finishes the workflow."""

    op: str
    data: bytes


@dataclass(slots=True, frozen=True)
class Transition:
    """Change the global status (compare-and-set on the current one).

    `reload`: branches may have been added up to this write (registerBranch is accepted
    while the transaction is prepared), so the list the plan was made from may miss some;
    once the write has closed registration, the engine reads the branches again.
    """

    status: Status
    reason: str = ""
    reload: bool = False


@dataclass(slots=True, frozen=True)
class Wait:
    """Nothing to do now; come back at `until` (None: the usual retry interval)."""

    until: float | None = None


Plan = Call | QueryPrepared | Resume | Transition | Wait
