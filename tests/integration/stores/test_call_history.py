"""The call history of the Store contract (`Change.calls`, `get_calls`), on every backend."""

from __future__ import annotations

import asyncio

import pytest

from dtmx.core.models import BranchUpdate, CallRecord, Change, Op, Outcome, Status
from dtmx.stores.base import Store
from tests.integration.stores.test_contract import T0, approx, br, gid, mk, saga_branches


def call(branch_id: str, op: Op, start: float, outcome: Outcome = Outcome.ERROR,
         reason: str = "", next_retry: float | None = None) -> CallRecord:
    return CallRecord(branch_id, op, start, 0.25, outcome, reason, "host:1:ab", next_retry)


def seen(calls: list[CallRecord]) -> list[tuple[str, str, int, Outcome]]:
    return [(c.branch_id, c.op.value, c.attempt, c.outcome) for c in calls]


async def test_calls_ride_on_update_numbered_per_branch_op(store: Store) -> None:
    g = gid()
    assert await store.create(trans=mk(g), branches=saga_branches(g))
    assert await store.get_calls(gid=g) == []
    # an error, scheduled for a retry: no branch row changes
    first = call("01", Op.ACTION, T0 + 1, reason="503 busy ✓", next_retry=T0 + 11)
    assert await store.update(gid=g, now=T0 + 2, expect_status=Status.SUBMITTED,
                              expect_owner=None, change=Change(calls=(first,)))
    ok = call("01", Op.ACTION, T0 + 12, Outcome.SUCCESS)
    assert await store.update(
        gid=g, now=T0 + 13, expect_status=Status.SUBMITTED, expect_owner=None,
        change=Change(branches=(BranchUpdate("01", Op.ACTION, Status.SUCCEED),),
                      calls=(ok, call("02", Op.ACTION, T0 + 12.5, Outcome.FAILURE, "no"))))
    got = await store.get_calls(gid=g)
    assert seen(got) == [("01", "action", 1, Outcome.ERROR), ("01", "action", 2, Outcome.SUCCESS),
                         ("02", "action", 1, Outcome.FAILURE)]
    c = got[0]
    assert c.start == approx(T0 + 1) and c.duration == approx(0.25)
    assert c.reason == "503 busy ✓" and c.server == "host:1:ab"
    assert c.next_retry == approx(T0 + 11) and got[1].next_retry is None
    assert got[2].reason == "no"
    branches = {b.key: b.status for b in await store.get_branches(gid=g)}
    assert branches[("01", Op.ACTION)] is Status.SUCCEED


async def test_calls_are_not_written_when_the_compare_fails(store: Store) -> None:
    g = gid()
    assert await store.create(trans=mk(g, owner="me"), branches=saga_branches(g))
    c = call("01", Op.ACTION, T0)
    assert not await store.update(gid=g, now=T0, expect_status=Status.ABORTING,
                                  expect_owner=None, change=Change(calls=(c,)))
    assert not await store.update(gid=g, now=T0, expect_status=Status.SUBMITTED,
                                  expect_owner="other", change=Change(calls=(c,)))
    assert not await store.update(gid=gid(), now=T0, expect_status=Status.SUBMITTED,
                                  expect_owner=None, change=Change(calls=(c,)))
    assert await store.get_calls(gid=g) == []


async def test_history_keeps_the_first_and_the_newest_calls(store: Store) -> None:
    g = gid()
    assert await store.create(trans=mk(g), branches=saga_branches(g))
    for i in range(6):
        calls = (call("01", Op.ACTION, T0 + i),)
        if i == 5:  # another op's history is its own
            calls += (call("01", Op.COMPENSATE, T0 + i),)
        assert await store.update(gid=g, now=T0 + i, expect_status=Status.SUBMITTED,
                                  expect_owner=None, change=Change(calls=calls, keep_calls=3))
    got = await store.get_calls(gid=g)
    assert [(c.op.value, c.attempt) for c in got] == [
        ("action", 1), ("action", 5), ("action", 6), ("compensate", 1)]
    assert [c.start for c in got] == [approx(T0), approx(T0 + 4), approx(T0 + 5), approx(T0 + 5)]


async def test_two_calls_of_one_op_in_one_update(store: Store) -> None:
    g = gid()
    assert await store.create(trans=mk(g), branches=saga_branches(g))
    two = (call("01", Op.ACTION, T0), call("01", Op.ACTION, T0 + 1, Outcome.ONGOING))
    assert await store.update(gid=g, now=T0 + 2, expect_status=Status.SUBMITTED,
                              expect_owner=None, change=Change(calls=two))
    assert seen(await store.get_calls(gid=g)) == [
        ("01", "action", 1, Outcome.ERROR), ("01", "action", 2, Outcome.ONGOING)]


async def test_take_refuses_calls(store: Store) -> None:
    g = gid()
    assert await store.create(trans=mk(g), branches=[])
    with pytest.raises(ValueError):
        await store.take(gid=g, now=T0, expect_status=Status.SUBMITTED,
                         change=Change(calls=(call("01", Op.ACTION, T0),)))


async def test_history_goes_with_the_expired_transaction(store: Store) -> None:
    g = gid()
    assert await store.create(trans=mk(g), branches=saga_branches(g))
    assert await store.update(gid=g, now=T0 + 1, expect_status=Status.SUBMITTED,
                              expect_owner=None,
                              change=Change(status=Status.SUCCEED,
                                            calls=(call("01", Op.ACTION, T0, Outcome.SUCCESS),)))
    assert len(await store.get_calls(gid=g)) == 1
    assert await store.expire_finished(before=T0 + 100, limit=10) >= 1
    assert await store.get(gid=g) is None
    assert await store.get_calls(gid=g) == []


async def test_concurrent_updates_each_keep_their_calls(store: Store) -> None:
    # on MySQL/PostgreSQL these share round trips (batch lanes)
    gids = [gid() for _ in range(12)]
    for g in gids:
        assert await store.create(trans=mk(g), branches=saga_branches(g))

    async def step(g: str, i: int) -> bool:
        return await store.update(
            gid=g, now=T0 + i, expect_status=Status.SUBMITTED, expect_owner=None,
            change=Change(branches=(BranchUpdate("01", Op.ACTION, Status.SUCCEED),),
                          calls=(call("01", Op.ACTION, T0 + i, Outcome.SUCCESS),)))

    assert all(await asyncio.gather(*(step(g, i) for i, g in enumerate(gids))))
    for i, g in enumerate(gids):
        got = await store.get_calls(gid=g)
        assert seen(got) == [("01", "action", 1, Outcome.SUCCESS)]
        assert got[0].start == approx(T0 + i)


async def test_an_update_with_calls_is_one_round_trip(store: Store) -> None:
    g = gid()
    assert await store.create(trans=mk(g), branches=saga_branches(g))
    before = store.roundtrips
    assert await store.update(gid=g, now=T0, expect_status=Status.SUBMITTED, expect_owner=None,
                              change=Change(calls=(call("01", Op.ACTION, T0),)))
    assert store.roundtrips - before == 1


def numbered(c: CallRecord, attempt: int) -> CallRecord:
    return CallRecord(c.branch_id, c.op, c.start, c.duration, c.outcome, c.reason, c.server,
                      c.next_retry, attempt)


async def counts(store: Store, g: str) -> dict[tuple[str, Op], int]:
    return {b.key: b.calls for b in await store.get_branches(gid=g)}


async def test_engine_numbered_first_call_rides_with_its_op_and_retries_follow(
    store: Store,
) -> None:
    g = gid()
    assert await store.create(trans=mk(g), branches=saga_branches(g))
    assert set((await counts(store, g)).values()) == {0}
    # the happy path: each op's status change with its first call
    assert await store.update(
        gid=g, now=T0 + 1, expect_status=Status.SUBMITTED, expect_owner=None,
        change=Change(branches=(BranchUpdate("01", Op.ACTION, Status.SUCCEED),),
                      calls=(numbered(call("01", Op.ACTION, T0, Outcome.SUCCESS), 1),
                             numbered(call("02", Op.ACTION, T0 + 0.5, reason="busy",
                                           next_retry=T0 + 9), 1))))
    # a retry of 02 that fails, and a msg-like call of an op without a row (numbered by
    # the store)
    assert await store.update(
        gid=g, now=T0 + 10, expect_status=Status.SUBMITTED, expect_owner=None,
        change=Change(branches=(BranchUpdate("02", Op.ACTION, Status.FAILED),),
                      calls=(numbered(call("02", Op.ACTION, T0 + 10, Outcome.FAILURE), 2),
                             call("00", Op.MSG, T0 + 10.5, Outcome.ONGOING))))
    got = await store.get_calls(gid=g)
    assert seen(got) == [("01", "action", 1, Outcome.SUCCESS), ("02", "action", 1, Outcome.ERROR),
                         ("02", "action", 2, Outcome.FAILURE), ("00", "msg", 1, Outcome.ONGOING)]
    first = got[1]
    assert first.start == approx(T0 + 0.5) and first.duration == approx(0.25)
    assert first.reason == "busy" and first.server == "host:1:ab"
    assert first.next_retry == approx(T0 + 9) and got[0].next_retry is None
    assert await counts(store, g) == {("01", Op.ACTION): 1, ("02", Op.ACTION): 2,
                                      ("01", Op.COMPENSATE): 0, ("02", Op.COMPENSATE): 0}
    branches = {b.key: b for b in await store.get_branches(gid=g)}
    assert branches[("02", Op.ACTION)].status is Status.FAILED
    # a call-only write leaves an op's status and update_time alone
    assert branches[("01", Op.COMPENSATE)].status is Status.PREPARED
    assert await store.update(
        gid=g, now=T0 + 20, expect_status=Status.SUBMITTED, expect_owner=None,
        change=Change(calls=(numbered(call("01", Op.COMPENSATE, T0 + 20), 1),)))
    after = {b.key: b for b in await store.get_branches(gid=g)}
    assert after[("01", Op.COMPENSATE)].status is Status.PREPARED
    assert after[("01", Op.COMPENSATE)].update_time == approx(
        branches[("01", Op.COMPENSATE)].update_time)
    assert after[("01", Op.COMPENSATE)].calls == 1
    assert len(await store.get_calls(gid=g)) == 5


async def test_engine_numbered_calls_are_not_written_when_the_compare_fails(
    store: Store,
) -> None:
    g = gid()
    assert await store.create(trans=mk(g, owner="me"), branches=saga_branches(g))
    change = Change(branches=(BranchUpdate("01", Op.ACTION, Status.SUCCEED),),
                    calls=(numbered(call("01", Op.ACTION, T0), 1),
                           numbered(call("02", Op.ACTION, T0), 2)))
    assert not await store.update(gid=g, now=T0, expect_status=Status.SUBMITTED,
                                  expect_owner="other", change=change)
    assert not await store.update(gid=g, now=T0, expect_status=Status.ABORTING,
                                  expect_owner=None, change=change)
    assert await store.get_calls(gid=g) == []
    assert set((await counts(store, g)).values()) == {0}
    assert {b.status for b in await store.get_branches(gid=g)} == {Status.PREPARED}


async def test_engine_numbered_history_keeps_the_first_and_the_newest(store: Store) -> None:
    g = gid()
    assert await store.create(trans=mk(g), branches=saga_branches(g))
    for i in range(1, 8):
        calls = (numbered(call("01", Op.ACTION, T0 + i), i),)
        if i == 7:  # two in one write, numbered on
            calls += (numbered(call("01", Op.ACTION, T0 + 7.5), 8),)
        assert await store.update(gid=g, now=T0 + i, expect_status=Status.SUBMITTED,
                                  expect_owner=None, change=Change(calls=calls, keep_calls=3))
    got = await store.get_calls(gid=g)
    assert [c.attempt for c in got] == [1, 7, 8]
    assert [c.start for c in got] == [approx(T0 + 1), approx(T0 + 7), approx(T0 + 7.5)]
    assert (await counts(store, g))[("01", Op.ACTION)] == 8


async def batch(store: Store, g: str, ids: range, now: float, *, expect: Status = Status.SUBMITTED
                ) -> bool:
    """A plain sequential saga's batch: each action's success with its first call (SQLite
    writes such rows by multi-row statements, binding shared values once)."""
    return await store.update(
        gid=g, now=now, expect_status=expect, expect_owner=None,
        change=Change(
            branches=tuple(BranchUpdate(f"{i:04d}", Op.ACTION, Status.SUCCEED) for i in ids),
            calls=tuple(numbered(CallRecord(f"{i:04d}", Op.ACTION, T0 + i, 0.001 * i,
                                            Outcome.SUCCESS, "", "host:1:ab"), 1)
                        for i in ids)))


async def test_a_batch_keeps_each_ops_own_call(store: Store) -> None:
    g = gid()
    many = [br(g, f"{i:04d}", op) for i in range(1, 41) for op in (Op.COMPENSATE, Op.ACTION)]
    assert await store.create(trans=mk(g), branches=many)
    assert await batch(store, g, range(1, 34), T0 + 50)
    assert not await batch(store, g, range(34, 41), T0 + 60, expect=Status.ABORTING)
    rows = {b.key: b for b in await store.get_branches(gid=g)}
    for i in range(1, 41):
        b = rows[(f"{i:04d}", Op.ACTION)]
        assert (b.status, b.calls) == ((Status.SUCCEED, 1) if i < 34 else (Status.PREPARED, 0))
        assert b.finish_time == (approx(T0 + 50) if i < 34 else None)
        assert rows[(f"{i:04d}", Op.COMPENSATE)].status is Status.PREPARED
    got = await store.get_calls(gid=g)
    assert [(c.branch_id, c.attempt, c.outcome) for c in got] == [
        (f"{i:04d}", 1, Outcome.SUCCESS) for i in range(1, 34)]
    assert [(c.start, c.duration) for c in got] == [
        (approx(T0 + i), approx(0.001 * i)) for i in range(1, 34)]


async def test_a_large_update_keeps_the_update_contract(store: Store) -> None:
    # 1,200 ops: over SQLite's OFF_LOOP_ROWS, so its worker-thread path is held to it too
    g = gid()
    many = [br(g, f"{i:04d}", Op.ACTION) for i in range(1, 1201)]
    assert await store.create(trans=mk(g), branches=many)
    assert not await batch(store, g, range(1, 1201), T0 + 50, expect=Status.ABORTING)
    assert {b.status for b in await store.get_branches(gid=g)} == {Status.PREPARED}
    assert await store.get_calls(gid=g) == []
    assert await batch(store, g, range(1, 1201), T0 + 60)
    got = await store.get_branches(gid=g)
    assert {(b.status, b.calls) for b in got} == {(Status.SUCCEED, 1)}
    assert len(await store.get_calls(gid=g)) == 1200
