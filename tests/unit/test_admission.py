"""Admission is pure: a request and what is known of the stored row give one decision."""

from __future__ import annotations

import pytest

from dtmx.core import admission
from dtmx.core.admission import UNREAD, Accept, Act, Create, Read, Reject, Take, decide
from dtmx.core.limits import Limits
from dtmx.core.models import Status, Transaction, TransOptions, TransType
from dtmx.core.request import TransRequest, Verb, check_trans
from dtmx.core.timing import Timing
from dtmx.errors import BadRequest, Failure, NotFound


def req(tt: TransType, **kw: object) -> TransRequest:
    return TransRequest(gid="g", trans_type=tt, **kw)  # type: ignore[arg-type]


def row(tt: TransType, status: Status) -> Transaction:
    return Transaction(gid="g", trans_type=tt, status=status)


def rejected(a: object, error: type, text: str) -> bool:
    return isinstance(a, Reject) and type(a.error) is error and text in str(a.error)


def test_prepare_creates_then_accepts_a_repeat_and_refuses_other_states() -> None:
    tcc = req(TransType.TCC)
    assert decide(Act.PREPARE, tcc, UNREAD) == Create(Status.PREPARED, run=False)
    assert decide(Act.PREPARE, tcc, row(TransType.TCC, Status.PREPARED)) == Accept()
    assert rejected(decide(Act.PREPARE, tcc, row(TransType.TCC, Status.SUBMITTED)), Failure,
                    "current status 'submitted', cannot prepare")
    assert rejected(decide(Act.PREPARE, tcc, None), Failure, "current status 'missing'")
    # what the request alone decides is checked before admission, by core.request
    with pytest.raises(BadRequest, match="saga"):
        check_trans(req(TransType.SAGA), Verb.PREPARE, Limits())
    with pytest.raises(BadRequest, match="query_prepared"):
        check_trans(req(TransType.MSG, steps=[{"action": "u"}], payloads=[b""]), Verb.PREPARE,
                    Limits())
    # a type mismatch is refused before "already submitted"
    assert rejected(decide(Act.SUBMIT, tcc, row(TransType.SAGA, Status.SUBMITTED)), BadRequest,
                    "is a saga, not a tcc")
    assert rejected(decide(Act.PREPARE, req(TransType.XA), row(TransType.TCC, Status.PREPARED)),
                    BadRequest, "is a tcc, not a xa")


def test_submit_takes_a_prepared_row_first_and_creates_otherwise() -> None:
    first = decide(Act.SUBMIT, req(TransType.MSG, options=TransOptions(wait_result=True)),
                   UNREAD)
    assert first == Take(Status.PREPARED, TransType.MSG, Status.SUBMITTED, wait_result=True,
                         otherwise=Create(Status.SUBMITTED, run=True))
    # a saga is never prepared: straight to create
    assert decide(Act.SUBMIT, req(TransType.SAGA), UNREAD) == Create(Status.SUBMITTED, run=True)


@pytest.mark.parametrize(("stored", "expected"), [
    (row(TransType.SAGA, Status.SUBMITTED), Accept()),  # double submit
    (row(TransType.TCC, Status.PREPARED), Take(Status.PREPARED, TransType.TCC, Status.SUBMITTED)),
])
def test_submit_decided_on_the_stored_row(stored: Transaction, expected: object) -> None:
    assert decide(Act.SUBMIT, req(stored.trans_type), stored) == expected


def test_submit_refusals() -> None:
    tcc = req(TransType.TCC)
    assert rejected(decide(Act.SUBMIT, tcc, None), Failure, "vanished")
    assert rejected(decide(Act.SUBMIT, tcc, row(TransType.TCC, Status.FAILED)), Failure,
                    "current status 'failed', cannot submit")
    assert rejected(decide(Act.SUBMIT, tcc, row(TransType.MSG, Status.PREPARED)), BadRequest,
                    "gid g is a msg, not a tcc")


def test_abort() -> None:
    why = req(TransType.TCC, rollback_reason="why")
    assert decide(Act.ABORT, why, UNREAD) == Take(
        Status.PREPARED, TransType.TCC, Status.ABORTING, "why")
    # a prepared msg just fails, without a run
    assert decide(Act.ABORT, req(TransType.MSG), UNREAD) == Take(
        Status.PREPARED, TransType.MSG, Status.FAILED, run=False)
    assert decide(Act.ABORT, req(TransType.SAGA), UNREAD) == Read()
    # decided on what is stored, whatever the request said
    assert decide(Act.ABORT, req(TransType.SAGA), row(TransType.MSG, Status.PREPARED)) == Take(
        Status.PREPARED, TransType.MSG, Status.FAILED, run=False)
    # already rolling back: accepted without a second run beside its owner's (issue 14's
    # simulation found the take-over running the cancels twice at once)
    assert decide(Act.ABORT, why, row(TransType.XA, Status.ABORTING)) == Accept()
    assert decide(Act.ABORT, why, row(TransType.TCC, Status.ABORTING)) == Accept()
    assert rejected(decide(Act.ABORT, why, None), Failure, "no transaction with gid g")
    assert rejected(decide(Act.ABORT, why, row(TransType.SAGA, Status.SUBMITTED)), Failure,
                    "trans type: 'saga' current status 'submitted', cannot abort")


def test_new_transaction_is_due_at_its_timeout_when_prepared_else_at_its_lease() -> None:
    timing = Timing(timeout_to_fail=35, lease=30, request_timeout=3)
    prepared = admission.new_transaction(req(TransType.TCC), Status.PREPARED, 100.0, "", timing)
    assert prepared.next_cron_time == 135 and prepared.next_cron_interval == 10
    slow = req(TransType.SAGA, options=TransOptions(request_timeout=20, retry_interval=7))
    submitted = admission.new_transaction(slow, Status.SUBMITTED, 100.0, "o", timing)
    assert submitted.next_cron_time == 100 + 41 and submitted.next_cron_interval == 7
    assert submitted.owner == "o"


def test_force_stop_refuses_missing_and_finished() -> None:
    assert isinstance(admission.force_stop("g", None), NotFound)
    assert isinstance(admission.force_stop("g", row(TransType.SAGA, Status.SUCCEED)), Failure)
    assert admission.force_stop("g", row(TransType.SAGA, Status.ABORTING)) is None


def test_topics_of_a_msg() -> None:
    r = req(TransType.MSG, steps=[{"action": "topic://a"}, {"action": "http://x"}])
    assert admission.topics(r) == ["a"]
    assert admission.topics(req(TransType.SAGA, steps=[{"action": "topic://a"}])) == []
