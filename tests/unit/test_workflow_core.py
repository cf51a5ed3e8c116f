"""Workflow mode's pure parts: input rules, admission, the planner and its first due time."""

from __future__ import annotations

import pytest

from dtmx.core import processors
from dtmx.core.admission import UNREAD, Accept, Act, Create, Reject, Take, decide
from dtmx.core.limits import Limits
from dtmx.core.models import Op, Status, Transaction, TransOptions, TransType
from dtmx.core.plan import Resume, Wait
from dtmx.core.request import TransRequest, Verb, check_trans, parse_registration
from dtmx.core.timing import Timing, first_due
from dtmx.errors import BadRequest, Failure

CUSTOM = '{"name":"transfer","data":"eyJhIjoxfQ=="}'  # data = {"a":1}


def wf(**kw: object) -> TransRequest:
    return TransRequest(gid="g", trans_type=TransType.WORKFLOW, **kw)  # type: ignore[arg-type]


def stored(status: Status, **kw: object) -> Transaction:
    return Transaction(gid="g", trans_type=TransType.WORKFLOW, status=status,
                       custom_data=CUSTOM, **kw)  # type: ignore[arg-type]


def test_prepare_workflow_creates_or_accepts_whatever_is_stored() -> None:
    r = wf(custom_data=CUSTOM)
    assert decide(Act.PREPARE_WORKFLOW, r, UNREAD) == Create(Status.PREPARED, run=False)
    for status in Status:
        assert decide(Act.PREPARE_WORKFLOW, r, stored(status)) == Accept()
    saga = Transaction(gid="g", trans_type=TransType.SAGA, status=Status.SUBMITTED)
    other = decide(Act.PREPARE_WORKFLOW, r, saga)
    assert isinstance(other, Reject) and isinstance(other.error, BadRequest)


def test_submit_workflow_sets_the_final_status_or_accepts_the_same_again() -> None:
    r = wf(req_extra={"status": "failed", "result": "", "rollback_reason": "no money"})
    assert decide(Act.SUBMIT, r, UNREAD) == Take(
        Status.PREPARED, TransType.WORKFLOW, Status.FAILED, "no money", run=False, result="")
    assert decide(Act.SUBMIT, r, stored(Status.FAILED)) == Accept()
    refused = decide(Act.SUBMIT, r, stored(Status.SUCCEED))
    assert isinstance(refused, Reject) and isinstance(refused.error, Failure)
    missing = decide(Act.SUBMIT, r, None)
    assert isinstance(missing, Reject) and "no prepared workflow" in str(missing.error)


@pytest.mark.parametrize(
    ("verb", "kw", "needle"),
    [
        (Verb.PREPARE_WORKFLOW, {"custom_data": ""}, "custom_data"),
        (Verb.PREPARE_WORKFLOW, {"custom_data": "[1]"}, "custom_data"),
        (Verb.PREPARE_WORKFLOW, {"custom_data": '{"name":"a b"}'}, "whitespace"),
        (Verb.PREPARE_WORKFLOW, {"custom_data": '{"name":"w","data":5}'}, "base64 text"),
        (Verb.SUBMIT, {"req_extra": {"status": "submitted"}}, "succeed or failed"),
        (Verb.SUBMIT, {"req_extra": {"status": "succeed", "result": "!"}}, "base64"),
        (Verb.ABORT, {}, "cannot be aborted"),
        (Verb.PREPARE_WORKFLOW, {"custom_data": '{"name":"w","data":"' + "A" * 65536 + '"}'},
         "longer than 65535 bytes"),
        (Verb.SUBMIT, {"req_extra": {"status": "failed", "rollback_reason": "é" * 40000}},
         "rollback_reason is longer"),
    ],
)
def test_bad_workflow_requests(verb: Verb, kw: dict[str, object], needle: str) -> None:
    with pytest.raises(BadRequest, match=needle):
        check_trans(wf(**kw), verb, Limits())


def test_prepare_workflow_is_for_workflows_only() -> None:
    saga = TransRequest(gid="g", trans_type=TransType.SAGA)
    with pytest.raises(BadRequest, match="trans_type workflow"):
        check_trans(saga, Verb.PREPARE_WORKFLOW, Limits())


def test_registration_of_a_step() -> None:
    reg = parse_registration({"gid": "g", "trans_type": "workflow", "branch_id": "01",
                              "op": "rollback", "status": "failed", "data": "boom"})
    assert (reg.op, reg.status, reg.payload, reg.urls) == (Op.ROLLBACK, Status.FAILED,
                                                           b"boom", {})


def test_plan_resumes_a_prepared_workflow_and_never_times_it_out() -> None:
    t = stored(Status.PREPARED, query_prepared="http://wf/cb", create_time=0.0)
    long_after = 10 * 86400.0
    assert processors.plan(t, [], long_after, Timing()) == Resume("transfer", b'{"a":1}')
    assert processors.plan(stored(Status.PREPARED), [], 0.0, Timing()) == Wait()  # no callback
    assert processors.plan(stored(Status.SUCCEED, query_prepared="x"), [], 0.0,
                           Timing()) == Wait()


def test_a_prepared_workflow_is_first_due_after_one_retry_interval() -> None:
    t = stored(Status.PREPARED)
    assert first_due(t, 100.0, Timing(retry_interval=10, timeout_to_fail=35)) == 110.0
    t.options = TransOptions(retry_interval=3)
    assert first_due(t, 100.0, Timing()) == 103.0
