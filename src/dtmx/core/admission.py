"""Admission: what a client's prepare, submit or abort does to the stored transaction. Pure.

`decide` looks at the request and at what is known of the stored row and returns one value;
the engine carries it out and, when a compare-and-set finds the row other than assumed,
reads the row and asks again:

    decide(act, req, UNREAD)  ->  Create / Take (optimistic: no read first) / Read / Reject
    decide(act, req, row)     ->  Take / Accept / Reject        (row: Transaction or None)

A new kind of transaction or client act adds a rule to `_RULES` (and, if it needs one, a
value here that the engine learns to carry out), not a branch in the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from dtmx.core import msg, saga, workflow
from dtmx.core.models import Branch, Status, Transaction, TransType
from dtmx.core.request import TransRequest
from dtmx.core.timing import Timing, base_interval, first_due
from dtmx.errors import BadRequest, DtmxError, Failure, NotFound

#: Transaction types that are normally prepared before they are submitted.
PREPARED_FIRST = (TransType.MSG, TransType.TCC, TransType.XA)
#: Transaction types whose branches the client registers (registerBranch) while prepared.
REGISTERED = (TransType.TCC, TransType.XA)


class Act(Enum):
    """What the client asks of a global transaction."""

    PREPARE = "prepare"
    SUBMIT = "submit"
    ABORT = "abort"
    #: store a workflow as prepared, or accept the stored one as it is (to be read back)
    PREPARE_WORKFLOW = "prepareWorkflow"


class Unread(Enum):
    """The stored row has not been read (the engine tries the common case first)."""

    UNREAD = "unread"


UNREAD = Unread.UNREAD
Stored = Transaction | None | Unread


@dataclass(slots=True, frozen=True)
class Create:
    """Insert the request as a new transaction in `status` with its branches; if the gid
    exists, read the row and decide again. `run`: claim it and process it at once."""

    status: Status
    run: bool


@dataclass(slots=True, frozen=True)
class Take:
    """Move the stored `trans_type` transaction from `expect` to `status` (compare-and-set)
    and read it back; if the compare fails, try `otherwise`, or read the row and decide again.

    `run`: claim it (fresh owner, default lease) and process it. `wait_result`: the client
    waits for the outcome even if the stored options do not say so. `result`: stored as
    the transaction's result (a workflow's, base64).
    """

    expect: Status
    trans_type: TransType
    status: Status
    reason: str = ""
    result: str = ""
    run: bool = True
    wait_result: bool = False
    otherwise: Create | None = None


@dataclass(slots=True, frozen=True)
class Read:
    """Nothing to try blindly: read the stored row, then decide again."""


@dataclass(slots=True, frozen=True)
class Accept:
    """Nothing to write: the request is already in effect (a repeated prepare or submit)."""


@dataclass(slots=True, frozen=True)
class Reject:
    """Refuse the request with `error`; nothing is written."""

    error: DtmxError


Admission = Create | Take | Read | Accept | Reject


def decide(act: Act, req: TransRequest, stored: Stored) -> Admission:
    """The next step of admitting `req`, given what is known of the stored row."""
    return _RULES[act](req, stored)


# The request itself was checked by `dtmx.core.request.check_trans`; these rules compare
# it with the stored row.


def _other_type(req: TransRequest, stored: Transaction) -> Reject | None:
    if stored.trans_type is req.trans_type:
        return None
    return Reject(BadRequest(f"gid {req.gid} is a {stored.trans_type}, not a {req.trans_type}"))


def _prepare(req: TransRequest, stored: Stored) -> Admission:
    if stored is UNREAD:
        return Create(Status.PREPARED, run=False)
    if stored is not None and (other := _other_type(req, stored)):
        return other
    if stored is None or stored.status is not Status.PREPARED:
        status = stored.status if stored else "missing"
        return Reject(Failure(f"current status '{status}', cannot prepare"))
    return Accept()


def _prepare_workflow(req: TransRequest, stored: Stored) -> Admission:
    # DTM answers a new and an existing workflow alike: whatever its status, the client
    # reads it back (a finished one returns its result instead of running again)
    if stored is UNREAD:
        return Create(Status.PREPARED, run=False)
    if stored is None:
        return Reject(Failure("transaction vanished while preparing; retry"))
    return _other_type(req, stored) or Accept()


def _submit_workflow(req: TransRequest, stored: Stored) -> Admission:
    # The client ran the workflow to its end: the submit only records the final status (a
    # workflow never becomes `submitted`, and the server has nothing left to run).
    out = workflow.parse_outcome(req.req_extra)
    if stored is UNREAD:
        return Take(Status.PREPARED, TransType.WORKFLOW, out.status, out.reason,
                    run=False, result=out.result)
    if stored is None:
        return Reject(Failure(f"no prepared workflow with gid {req.gid}"))
    if other := _other_type(req, stored):
        return other
    if stored.status is out.status:
        return Accept()  # the same submit again (its answer was lost): already in effect
    return Reject(Failure(f"current status '{stored.status}', cannot submit {out.status}"))


# The values every submit decides on, made once: a frozen dataclass's __init__ costs about
# a microsecond, and this runs for every submitted transaction.
_CREATE_SUBMITTED = Create(Status.SUBMITTED, run=True)
# (trans_type, wait_result) -> the optimistic take of a prepared row, then create
_TAKE_OR_CREATE = {
    (t, w): Take(Status.PREPARED, t, Status.SUBMITTED, wait_result=w,
                 otherwise=_CREATE_SUBMITTED)
    for t in PREPARED_FIRST for w in (False, True)
}


def _submit(req: TransRequest, stored: Stored) -> Admission:
    t = req.trans_type
    if t is TransType.WORKFLOW:
        return _submit_workflow(req, stored)
    if stored is UNREAD:
        # usually prepared already: claim it in one round trip, create only if that fails
        if t in PREPARED_FIRST:
            return _TAKE_OR_CREATE[t, bool(req.options.wait_result)]
        return _CREATE_SUBMITTED
    take = Take(Status.PREPARED, t, Status.SUBMITTED, wait_result=req.options.wait_result)
    if stored is None:
        return Reject(Failure("transaction vanished while submitting; retry"))
    if other := _other_type(req, stored):
        return other  # before "already submitted": a TCC submit must not pass for a saga's
    if stored.status is Status.SUBMITTED:
        return Accept()  # double submit: it is already being processed
    if stored.status is not Status.PREPARED:
        return Reject(Failure(f"current status '{stored.status}', cannot submit"))
    return take


def _abort(req: TransRequest, stored: Stored) -> Admission:
    reason = req.rollback_reason
    if stored is UNREAD:
        if req.trans_type is TransType.MSG:
            # a prepared msg just fails: nothing was called yet, so there is nothing to run
            return Take(Status.PREPARED, TransType.MSG, Status.FAILED, reason, run=False)
        if req.trans_type in REGISTERED:
            return Take(Status.PREPARED, req.trans_type, Status.ABORTING, reason)
        return Read()
    # not prepared as the request says: decide from what is stored
    if stored is None:
        return Reject(Failure(f"no transaction with gid {req.gid}"))
    if stored.trans_type is TransType.MSG and stored.status is Status.PREPARED:
        return Take(Status.PREPARED, TransType.MSG, Status.FAILED, reason, run=False)
    if stored.trans_type in REGISTERED and stored.status is Status.ABORTING:
        # Already rolling back (a repeated abort, or one that lost the race with the
        # poller's timeout): its owner is cancelling, or the poller claims it when that
        # owner's lease ends. Taking it again would run it twice at once (found by the
        # simulation: two engines calling cancels, one after the transaction had failed).
        return Accept()
    if stored.trans_type not in REGISTERED or stored.status is not Status.PREPARED:
        return Reject(Failure(
            f"trans type: '{stored.trans_type}' current status '{stored.status}', "
            "cannot abort"))
    return Take(stored.status, stored.trans_type, Status.ABORTING, reason)


_RULES: dict[Act, Callable[[TransRequest, Stored], Admission]] = {
    Act.PREPARE: _prepare,
    Act.SUBMIT: _submit,
    Act.ABORT: _abort,
    Act.PREPARE_WORKFLOW: _prepare_workflow,
}


def topics(req: TransRequest) -> list[str]:
    """The topics whose subscribers a new transaction's branches need (msg steps only)."""
    if req.trans_type is not TransType.MSG:
        return []
    return [step["action"][len(msg.TOPIC_PREFIX):] for step in req.steps
            if step.get("action", "").startswith(msg.TOPIC_PREFIX)]


def new_branches(req: TransRequest, now: float, subscribers: dict[str, list[str]]
                 ) -> list[Branch]:
    """The branch rows `req` creates (saga and msg steps; TCC/XA register theirs later).
    `req` was checked by `dtmx.core.request.check_trans`, the fan-out by `check_fanout`."""
    if req.trans_type is TransType.SAGA:
        return saga.gen_branches(req.gid, req.steps, req.payloads, now)
    if req.trans_type is TransType.MSG:
        return msg.gen_branches(req.gid, req.steps, req.payloads, subscribers, now)
    return []


def new_transaction(req: TransRequest, status: Status, now: float, owner: str,
                    timing: Timing) -> Transaction:
    """The global row `req` creates, claimed by `owner` ('' for a prepared one)."""
    trans = Transaction(
        gid=req.gid,
        trans_type=req.trans_type,
        status=status,
        protocol=req.protocol,
        query_prepared=req.query_prepared,
        custom_data=req.custom_data,
        options=req.options,
        create_time=now,
        update_time=now,
        owner=owner,
        rollback_reason=req.rollback_reason,
    )
    trans.next_cron_interval = base_interval(trans, timing)
    trans.next_cron_time = first_due(trans, now, timing)
    return trans


def force_stop(gid: str, stored: Transaction | None) -> DtmxError | None:
    """Why `stored` cannot be force-stopped, or None if it can (any unfinished status)."""
    if stored is None:
        return NotFound(f"no transaction with gid {gid}")
    if stored.status.finished:
        return Failure(f"global transaction force stop error. status: {stored.status}")
    return None

