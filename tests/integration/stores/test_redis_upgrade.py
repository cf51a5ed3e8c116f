"""A transaction in flight across the upgrade to schema v3 on Redis, which has no `dtmx
migrate` for it. Its earlier calls sit in the history hash as dtmx before v3 wrote them
(update.lua of 9f87f6f: every call of an op counted in `n:<key>`, the kept ones as lines
"<attempt> <json>" in `l:<key>`, the first and the newest keep - 1) and its branch hash has
no count (`k:<i>`). Once it is loaded, its next calls are numbered after those and its
first call stays. On one Redis and on the 3-master cluster."""

from __future__ import annotations

import pytest

from dtmx.core.limits import Limits
from dtmx.core.models import Branch, BranchUpdate, CallRecord, Change, Op, Outcome, Status
from dtmx.core.timing import Timing
from dtmx.engine import Engine
from dtmx.invoke.http_invoker import HttpInvoker
from dtmx.stores.redis_codec import branch_key, encode_call
from dtmx.stores.redis_store import RedisStore
from tests.integration.stores.test_call_history import call, numbered
from tests.integration.stores.test_contract import T0, approx, gid, mk, saga_branches
from tests.support.branch_stub import SUCCESS, branch_stub
from tests.support.clock import FakeClock

pytestmark = pytest.mark.parametrize("store", ["redis", "redis-cluster"], indirect=True)


async def write_v2_history(store: RedisStore, g: str, op_calls: dict[tuple[str, Op],
                                                                      list[CallRecord]],
                           keep: int) -> None:
    """The history hash as the v2 update.lua left it after these calls, op by op."""
    fields: list[str | bytes] = []
    for (branch_id, op), calls in op_calls.items():
        lines: list[bytes] = []
        for n, c in enumerate(calls, 1):
            lines.append(b"%d " % n + encode_call(c))
            while len(lines) > keep:
                del lines[1]
        key = branch_key(branch_id, op)
        fields += [f"n:{key}", str(len(calls)), f"l:{key}", b"\n".join(lines)]
    c = f"{store.layout.tag(g)}:c:{g}"
    await store._call(c, "HSET", c, *fields)
    await store._call(c, "PEXPIRE", c, 3_600_000)


def seen(calls: list[CallRecord]) -> list[tuple[str, str, int, float]]:
    return [(c.branch_id, c.op.value, c.attempt, c.start) for c in calls]


async def counts(store: RedisStore, g: str) -> dict[tuple[str, Op], int]:
    return {b.key: b.calls for b in await store.get_branches(gid=g)}


async def test_calls_of_a_v2_transaction_are_numbered_on_and_keep_the_first(
    store: RedisStore,
) -> None:
    g = gid()
    assert await store.create(trans=mk(g), branches=saga_branches(g))
    a1 = [call("01", Op.ACTION, T0 + i) for i in range(1, 6)]  # 5 calls, 1 4 5 kept
    await write_v2_history(store, g, {("01", Op.ACTION): a1,
                                      ("02", Op.ACTION): [call("02", Op.ACTION, T0 + 0.5)]},
                           keep=3)
    before = {("01", Op.ACTION): 5, ("02", Op.ACTION): 1,
              ("01", Op.COMPENSATE): 0, ("02", Op.COMPENSATE): 0}
    assert await counts(store, g) == before
    taken = await store.take(gid=g, now=T0 + 6, expect_status=Status.SUBMITTED,
                             change=Change(owner="me", next_cron_time=T0 + 20))
    assert taken is not None
    assert {b.key: b.calls for b in taken[1]} == before
    assert [c.attempt for c in await store.get_calls(gid=g)] == [1, 1, 4, 5]
    # the engine's retry: numbered after the stored counts
    assert await store.update(
        gid=g, now=T0 + 7, expect_status=Status.SUBMITTED, expect_owner="me",
        change=Change(branches=(BranchUpdate("02", Op.ACTION, Status.SUCCEED),),
                      calls=(numbered(call("01", Op.ACTION, T0 + 6), 6),
                             numbered(call("02", Op.ACTION, T0 + 6.5, Outcome.SUCCESS), 2)),
                      keep_calls=3))
    assert seen(await store.get_calls(gid=g)) == [
        ("02", "action", 1, approx(T0 + 0.5)), ("01", "action", 1, approx(T0 + 1)),
        ("01", "action", 5, approx(T0 + 5)), ("01", "action", 6, approx(T0 + 6)),
        ("02", "action", 2, approx(T0 + 6.5))]
    assert await counts(store, g) == {**before, ("01", Op.ACTION): 6, ("02", Op.ACTION): 2}
    assert await store.update(
        gid=g, now=T0 + 8, expect_status=Status.SUBMITTED, expect_owner="me",
        change=Change(calls=(numbered(call("01", Op.ACTION, T0 + 8), 7),), keep_calls=3))
    got = [c for c in await store.get_calls(gid=g) if c.branch_id == "01"]
    assert [(c.attempt, c.start) for c in got] == [(1, approx(T0 + 1)), (6, approx(T0 + 6)),
                                                   (7, approx(T0 + 8))]


async def test_a_new_transaction_is_not_counted_from_its_history(store: RedisStore) -> None:
    # a msg-like call of an op without a row has a counter in the history: it counts
    # for no branch op, and the ops' own counts stay theirs
    g = gid()
    assert await store.create(trans=mk(g), branches=saga_branches(g))
    assert await store.update(
        gid=g, now=T0 + 1, expect_status=Status.SUBMITTED, expect_owner=None,
        change=Change(calls=(call("00", Op.MSG, T0), numbered(call("01", Op.ACTION, T0), 1),
                             numbered(call("01", Op.ACTION, T0 + 0.5), 2))))
    assert await counts(store, g) == {("01", Op.ACTION): 2, ("02", Op.ACTION): 0,
                                      ("01", Op.COMPENSATE): 0, ("02", Op.COMPENSATE): 0}


async def test_the_engine_retries_a_v2_transaction(store: RedisStore) -> None:
    """Through the engine and a real branch service: the failing op of a saga begun before
    the upgrade is retried after it, once failing and once succeeding."""
    clock = FakeClock()
    now = clock.now()
    answers = [(500, b"busy"), SUCCESS]
    with branch_stub(lambda path: answers.pop(0) if path.startswith("/in?") else SUCCESS) as url:
        g = gid()
        branches = [Branch(gid=g, branch_id=bid, op=op, url=f"{url}/{name}", data=b"{}",
                           create_time=now - 60, update_time=now - 60)
                    for bid, name in (("01", "out"), ("02", "in"))
                    for op in (Op.COMPENSATE, Op.ACTION)]
        branches[1].status = Status.SUCCEED
        assert await store.create(trans=mk(g, now=now - 60, next_cron=now - 1),
                                  branches=branches)
        # before the upgrade: 01 succeeded at once, 02 failed 4 times (1, 3, 4 kept)
        old_in = [call("02", Op.ACTION, now - 50 + i) for i in range(4)]
        await write_v2_history(store, g, {
            ("01", Op.ACTION): [call("01", Op.ACTION, now - 59, Outcome.SUCCESS)],
            ("02", Op.ACTION): old_in}, keep=3)
        invoker = HttpInvoker()
        engine = Engine(store=store, invoker=invoker, clock=clock, timing=Timing(),
                        limits=Limits(MaxCallsPerBranch=3))
        try:
            for _ in range(2):
                claimed = await engine.claim_due(limit=10)
                assert [t.gid for t in claimed] == [g]
                await engine.resume(claimed[0])
                clock.advance(600)
        finally:
            await invoker.close()
    t = await store.get(gid=g)
    assert t is not None and t.status is Status.SUCCEED
    got = await store.get_calls(gid=g)
    assert [(c.branch_id, c.attempt, c.outcome) for c in got] == [
        ("01", 1, Outcome.SUCCESS), ("02", 1, Outcome.ERROR), ("02", 5, Outcome.ERROR),
        ("02", 6, Outcome.SUCCESS)]
    assert got[1].start == approx(now - 50)
    assert (await counts(store, g))[("02", Op.ACTION)] == 6
