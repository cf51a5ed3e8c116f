"""The processors are pure: feed them rows and a time, check the plan."""

from __future__ import annotations

import pytest

from dtmx.core import msg, processors, saga, tcc
from dtmx.core.models import Branch, Op, Outcome, Status, Transaction, TransOptions, TransType
from dtmx.core.plan import Call, QueryPrepared, Transition, Wait
from dtmx.core.timing import Timing, next_interval
from dtmx.errors import BadRequest

D = Timing(timeout_to_fail=35)


def mk_saga(n: int, custom: str = "", **opts: object) -> tuple[Transaction, list[Branch]]:
    t = Transaction(gid="g", trans_type=TransType.SAGA, status=Status.SUBMITTED,
                    custom_data=custom, options=TransOptions(**opts), create_time=100.0)  # type: ignore[arg-type]
    steps = [{"action": f"a{i}", "compensate": f"c{i}"} for i in range(n)]
    return t, saga.gen_branches("g", steps, [b"{}"] * n, 100.0)


def set_status(bs: list[Branch], bid: str, op: Op, st: Status) -> None:
    next(b for b in bs if b.branch_id == bid and b.op is op).status = st


def test_saga_branch_ids_and_order() -> None:
    _, bs = mk_saga(2)
    assert [(b.branch_id, b.op) for b in bs] == [
        ("01", Op.COMPENSATE), ("01", Op.ACTION), ("02", Op.COMPENSATE), ("02", Op.ACTION)]


def test_saga_sequential_forward_then_succeed() -> None:
    t, bs = mk_saga(2)
    assert processors.plan(t, bs, 101, D) == Call((("01", Op.ACTION),))
    set_status(bs, "01", Op.ACTION, Status.SUCCEED)
    assert processors.plan(t, bs, 101, D) == Call((("02", Op.ACTION),))
    set_status(bs, "02", Op.ACTION, Status.SUCCEED)
    assert processors.plan(t, bs, 101, D) == Transition(Status.SUCCEED)


def test_saga_failure_compensates_in_reverse_including_failed_step() -> None:
    t, bs = mk_saga(3)
    set_status(bs, "01", Op.ACTION, Status.SUCCEED)
    set_status(bs, "02", Op.ACTION, Status.FAILED)
    assert processors.plan(t, bs, 101, D) == Transition(Status.ABORTING)
    t.status = Status.ABORTING
    assert processors.plan(t, bs, 101, D) == Call((("02", Op.COMPENSATE),), decided=True)
    set_status(bs, "02", Op.COMPENSATE, Status.SUCCEED)
    assert processors.plan(t, bs, 101, D) == Call((("01", Op.COMPENSATE),), decided=True)
    set_status(bs, "01", Op.COMPENSATE, Status.SUCCEED)
    assert processors.plan(t, bs, 101, D) == Transition(Status.FAILED)


def test_saga_timeout_aborts_and_compensates_the_step_that_may_have_run() -> None:
    t, bs = mk_saga(2, timeout_to_fail=5)
    set_status(bs, "01", Op.ACTION, Status.SUCCEED)
    p = processors.plan(t, bs, 105, D)
    assert isinstance(p, Transition) and p.status is Status.ABORTING
    assert "Timeout after 5 seconds" in p.reason
    t.status = Status.ABORTING
    # step 2 was reachable (its call may have happened), so it is compensated first
    assert processors.plan(t, bs, 105, D) == Call((("02", Op.COMPENSATE),), decided=True)


def test_saga_never_times_out_by_default() -> None:
    t, bs = mk_saga(1)
    assert processors.plan(t, bs, 100 + 10**6, D) == Call((("01", Op.ACTION),))


def test_concurrent_saga_orders() -> None:
    t, bs = mk_saga(3, '{"concurrent":true,"orders":{"2":[0,1]}}')
    assert processors.plan(t, bs, 101, D) == Call((("01", Op.ACTION), ("02", Op.ACTION)))
    set_status(bs, "01", Op.ACTION, Status.SUCCEED)
    set_status(bs, "02", Op.ACTION, Status.SUCCEED)
    assert processors.plan(t, bs, 101, D) == Call((("03", Op.ACTION),))
    set_status(bs, "03", Op.ACTION, Status.FAILED)
    t.status = Status.ABORTING
    # 3 depends on 1 and 2: compensate 3 first, then 1 and 2 together
    assert processors.plan(t, bs, 101, D) == Call((("03", Op.COMPENSATE),), decided=True)
    set_status(bs, "03", Op.COMPENSATE, Status.SUCCEED)
    assert set(processors.plan(t, bs, 101, D).keys) == {  # type: ignore[union-attr]
        ("01", Op.COMPENSATE), ("02", Op.COMPENSATE)}


@pytest.mark.parametrize("custom", [
    '{"orders":{"0":[1],"1":[0]}}', '{"orders":{"5":[0]}}', '{"orders":{"x":[0]}}', "[1]", "{",
])
def test_bad_saga_orders_rejected(custom: str) -> None:
    with pytest.raises(BadRequest):
        saga.check_orders(saga.parse_custom(custom), 2, 100)


def test_tcc_confirm_reverse_and_prepared_timeout() -> None:
    t = Transaction(gid="g", trans_type=TransType.TCC, status=Status.PREPARED, create_time=100.0)
    bs = tcc.gen_registered(TransType.TCC, "g", "01", b"", {"confirm": "c1", "cancel": "x1"}, 100)
    bs += tcc.gen_registered(TransType.TCC, "g", "02", b"", {"confirm": "c2", "cancel": "x2"}, 100)
    assert processors.plan(t, bs, 101, D) == Wait(135.0)
    p = processors.plan(t, bs, 135, D)
    assert isinstance(p, Transition) and p.status is Status.ABORTING
    t.status = Status.SUBMITTED
    assert processors.plan(t, bs, 101, D) == Call((("02", Op.CONFIRM),), decided=True)
    set_status(bs, "02", Op.CONFIRM, Status.SUCCEED)
    assert processors.plan(t, bs, 101, D) == Call((("01", Op.CONFIRM),), decided=True)
    set_status(bs, "01", Op.CONFIRM, Status.SUCCEED)
    assert processors.plan(t, bs, 101, D) == Transition(Status.SUCCEED)
    t.status = Status.ABORTING
    assert processors.plan(t, bs, 101, D) == Call((("02", Op.CANCEL),), decided=True)


def test_msg_prepared_query_then_deliver_with_delay() -> None:
    t = Transaction(gid="g", trans_type=TransType.MSG, status=Status.PREPARED, create_time=100.0,
                    custom_data='{"delay": 10}')
    bs = msg.gen_branches("g", [{"action": "u1"}, {"action": "topic://t"}], [b"1", b"2"],
                          {"t": ["s1", "s2"]}, 100)
    assert [b.branch_id for b in bs] == ["01", "02-01", "02-02"]
    assert processors.plan(t, bs, 101, D) == Wait(135.0)
    assert processors.plan(t, bs, 135, D) == QueryPrepared()
    t.status = Status.SUBMITTED
    assert processors.plan(t, bs, 105, D) == Wait(110.0)
    assert processors.plan(t, bs, 111, D) == Call((("01", Op.ACTION),))


def test_msg_topic_without_subscribers_rejected() -> None:
    with pytest.raises(BadRequest):
        msg.gen_branches("g", [{"action": "topic://none"}], [b""], {"none": []}, 0)


def test_only_saga_actions_fail_for_good() -> None:
    assert processors.branch_status(TransType.SAGA, Op.ACTION, Outcome.FAILURE) is Status.FAILED
    assert processors.branch_status(TransType.SAGA, Op.COMPENSATE, Outcome.FAILURE) is None
    assert processors.branch_status(TransType.MSG, Op.ACTION, Outcome.FAILURE) is None
    assert processors.branch_status(TransType.TCC, Op.CONFIRM, Outcome.ONGOING) is None
    assert processors.branch_status(TransType.TCC, Op.CANCEL, Outcome.SUCCESS) is Status.SUCCEED


def test_backoff_doubles_and_caps() -> None:
    assert next_interval(0, 1, 100, backoff=False) == 1
    assert next_interval(1, 1, 100, backoff=True) == 2
    assert next_interval(64, 1, 100, backoff=True) == 100
    assert next_interval(64, 1, 100, backoff=False) == 1


def test_xa_second_phase_in_registration_order() -> None:
    t = Transaction(gid="g", trans_type=TransType.XA, status=Status.SUBMITTED, create_time=100.0)
    bs = tcc.gen_registered(TransType.XA, "g", "01", b"", {"url": "u1"}, 100)
    bs += tcc.gen_registered(TransType.XA, "g", "02", b"", {"url": "u2"}, 100)
    assert [(b.op, b.url) for b in bs[:2]] == [(Op.ROLLBACK, "u1"), (Op.COMMIT, "u1")]
    assert processors.plan(t, bs, 101, D) == Call((("01", Op.COMMIT),), decided=True)
    t.status = Status.ABORTING
    assert processors.plan(t, bs, 101, D) == Call((("01", Op.ROLLBACK),), decided=True)
