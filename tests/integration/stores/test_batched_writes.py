"""Batched compare-and-set updates, creates and branch registrations (group commit) on
MySQL and PostgreSQL.

Concurrent writes ride in shared round trips; each keeps the outcome it would have had
alone: a stale owner or status loses, its neighbours in the batch win, and two writers of
one row still see one winner. A store of our own (database / schema `dtmx_test_batch`),
one lane, so that updates queue behind the first round trip and form batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from dtmx.core.models import Branch, BranchUpdate, Change, Op, Status, TransType
from dtmx.errors import DuplicateBranch, StoreError
from dtmx.stores.sql import SqlStore
from dtmx.stores.sql.mysql import MysqlStore
from dtmx.stores.sql.postgres import PostgresStore

from .conftest import fresh
from .test_contract import T0, br, gid, mk, saga_branches

DB = "dtmx_test_batch"


@pytest.fixture(params=["mysql", "postgres"])
async def batching(request: pytest.FixtureRequest) -> AsyncIterator[SqlStore]:
    s: SqlStore
    if request.param == "mysql":
        s = MysqlStore("127.0.0.1", 3306, "root", "", DB, pool_size=4, batch_lanes=1)
    else:
        s = PostgresStore("127.0.0.1", 5432, "postgres", "", "postgres", DB, pool_size=4,
                          batch_lanes=1)
    async with fresh(s):
        yield s


async def _created(s: SqlStore, n: int, owner: str = "o1") -> list[str]:
    gids = [gid() for _ in range(n)]
    for g in gids:
        assert await s.create(trans=mk(g, owner=owner), branches=saga_branches(g))
    return gids


async def test_each_update_in_a_batch_keeps_its_own_outcome(batching: SqlStore) -> None:
    s = batching
    gids = await _created(s, 12)
    before = s.roundtrips
    step = Change(branches=(BranchUpdate("01", Op.ACTION, Status.SUCCEED),))
    done = Change(status=Status.SUCCEED,
                  branches=(BranchUpdate("02", Op.ACTION, Status.SUCCEED),))
    # even gids: our claim (they win); odd gids: a stale owner or a stale status (they lose)
    calls = []
    for i, g in enumerate(gids):
        if i % 4 == 1:
            calls.append(s.update(gid=g, now=T0 + 1, expect_status=Status.SUBMITTED,
                                  expect_owner="stale", change=done))
        elif i % 4 == 3:
            calls.append(s.update(gid=g, now=T0 + 1, expect_status=Status.PREPARED,
                                  expect_owner="o1", change=done))
        else:
            calls.append(s.update(gid=g, now=T0 + 1, expect_status=Status.SUBMITTED,
                                  expect_owner="o1", change=done if i % 4 == 0 else step))
    got = await asyncio.gather(*calls)
    assert got == [i % 2 == 0 for i in range(12)]
    assert s.roundtrips - before < 12  # some of them shared a round trip
    for i, g in enumerate(gids):
        t = await s.get(gid=g)
        assert t is not None
        bs = {b.branch_id: b.status for b in await s.get_branches(gid=g)
              if b.op is Op.ACTION}
        if i % 4 == 0:
            assert t.status is Status.SUCCEED and t.finish_time == pytest.approx(T0 + 1)
            assert bs == {"01": Status.PREPARED, "02": Status.SUCCEED}
        elif i % 4 == 2:
            assert t.status is Status.SUBMITTED and t.update_time == pytest.approx(T0 + 1)
            assert bs == {"01": Status.SUCCEED, "02": Status.PREPARED}
        else:  # a loser wrote nothing, branches included
            assert t.status is Status.SUBMITTED and t.update_time == pytest.approx(T0)
            assert bs == {"01": Status.PREPARED, "02": Status.PREPARED}


async def test_two_writers_of_one_row_one_wins(batching: SqlStore) -> None:
    s = batching
    gids = await _created(s, 6)
    # per gid: the run finishing it and a force stop, both expecting `submitted`, sent at
    # the same moment among other gids' writes
    calls = []
    for g in gids:
        calls.append(s.update(gid=g, now=T0 + 1, expect_status=Status.SUBMITTED,
                              expect_owner="o1", change=Change(status=Status.SUCCEED)))
        calls.append(s.update(gid=g, now=T0 + 2, expect_status=Status.SUBMITTED,
                              expect_owner=None,
                              change=Change(status=Status.FAILED, rollback_reason="stop")))
    got = await asyncio.gather(*calls)
    for i, g in enumerate(gids):
        run_won, stop_won = got[2 * i], got[2 * i + 1]
        assert run_won != stop_won
        t = await s.get(gid=g)
        assert t is not None
        assert t.status is (Status.SUCCEED if run_won else Status.FAILED)


async def test_retry_count_and_fields_in_a_batch(batching: SqlStore) -> None:
    s = batching
    gids = await _created(s, 4)
    changes = [
        Change(next_cron_time=T0 + 50, next_cron_interval=20.0, retry_count=3),
        Change(owner="o2", next_cron_time=T0 + 60),
        Change(status=Status.ABORTING, rollback_reason="why"),
        Change(result="r"),
    ]
    got = await asyncio.gather(*(
        s.update(gid=g, now=T0 + 1, expect_status=Status.SUBMITTED, expect_owner="o1",
                 change=c) for g, c in zip(gids, changes, strict=True)))
    assert got == [True] * 4
    a, b, c, d = [await s.get(gid=g) for g in gids]
    assert a is not None and b is not None and c is not None and d is not None
    assert a.options.retry_count == 3 and a.next_cron_interval == 20.0
    assert a.next_cron_time == pytest.approx(T0 + 50) and a.owner == "o1"
    assert b.owner == "o2" and b.next_cron_time == pytest.approx(T0 + 60)
    assert b.next_cron_interval == 10.0 and b.options.retry_count == 0
    assert c.status is Status.ABORTING and c.rollback_reason == "why"
    assert c.finish_time is None and c.rollback_time is None
    assert d.result == "r" and d.status is Status.SUBMITTED


async def test_an_error_reaches_only_its_caller(batching: SqlStore) -> None:
    s = batching
    gids = await _created(s, 5)
    too_long = "x" * 300  # owner is VARCHAR(128): the database refuses it
    calls = [
        s.update(gid=g, now=T0 + 1, expect_status=Status.SUBMITTED, expect_owner="o1",
                 change=Change(owner=too_long if i == 2 else "o2"))
        for i, g in enumerate(gids)
    ]
    got = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(got[2], StoreError)
    assert [got[i] for i in (0, 1, 3, 4)] == [True] * 4
    t = await s.get(gid=gids[2])
    assert t is not None and t.owner == "o1"


async def test_concurrent_creates_each_answer_for_themselves(batching: SqlStore) -> None:
    s = batching
    (existing,) = await _created(s, 1)
    gids = [gid() for _ in range(8)]
    before = s.roundtrips
    calls = [s.create(trans=mk(g, owner="o1"), branches=saga_branches(g)) for g in gids[:4]]
    assert await asyncio.gather(*calls) == [True] * 4
    assert s.roundtrips - before < 4
    # an existing gid answers False, and the same new gid twice: one True, one False (on
    # MySQL a batch with an existing gid is redone create by create)
    calls = [s.create(trans=mk(g, owner="o1"), branches=saga_branches(g)) for g in gids[4:]]
    calls.append(s.create(trans=mk(existing), branches=saga_branches(existing)))
    calls += [s.create(trans=mk(gids[4]), branches=saga_branches(gids[4]))]
    got = await asyncio.gather(*calls)
    assert got == [True] * 4 + [False, False]
    for g in gids:
        assert [(b.branch_id, b.op) for b in await s.get_branches(gid=g)] == [
            (b.branch_id, b.op) for b in saga_branches(g)]


async def test_a_duplicate_branch_fails_only_its_create(batching: SqlStore) -> None:
    s = batching
    gids = [gid() for _ in range(4)]
    dup = gids[2]
    calls = [s.create(trans=mk(g),
                      branches=saga_branches(g) + (saga_branches(g)[:1] if g == dup else []))
             for g in gids]
    got = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(got[2], DuplicateBranch)
    assert [got[i] for i in (0, 1, 3)] == [True] * 3
    assert await s.get(gid=dup) is None
    assert all([await s.get(gid=g) for g in gids if g != dup])


async def test_concurrent_creates_without_branches_share_round_trips(
        batching: SqlStore) -> None:
    # msg/TCC/XA prepares and prepareWorkflow create a transaction without branches
    s = batching
    gids = [gid() for _ in range(6)]
    before = s.roundtrips
    calls = [s.create(trans=mk(g, status=Status.PREPARED, tt=TransType.WORKFLOW), branches=[])
             for g in gids]
    assert await asyncio.gather(*calls) == [True] * 6
    assert s.roundtrips - before < 6
    # an existing gid answers False beside new ones (on MySQL the batch is redone alone)
    more = [gid() for _ in range(3)]
    calls = [s.create(trans=mk(g, status=Status.PREPARED, tt=TransType.WORKFLOW), branches=[])
             for g in more]
    calls.insert(1, s.create(trans=mk(gids[0], status=Status.PREPARED), branches=[]))
    assert await asyncio.gather(*calls) == [True, False, True, True]
    gids += more
    for g in gids:
        t = await s.get(gid=g)
        assert t is not None and t.trans_type is TransType.WORKFLOW
        assert await s.get_branches(gid=g) == []


def _step(g: str, branch_id: str, data: bytes) -> Branch:
    """A workflow's recorded step, its times left to the store's `now` (0.0)."""
    return replace(br(g, branch_id, Op.ACTION, data, url=""), status=Status.SUCCEED,
                   create_time=0.0, update_time=0.0, finish_time=T0 + 1)


async def test_concurrent_add_branches_each_answer_for_themselves(batching: SqlStore) -> None:
    s = batching
    gids = [gid() for _ in range(12)]
    for i, g in enumerate(gids):
        tt = TransType.TCC if i % 4 == 3 else TransType.WORKFLOW
        status = Status.SUBMITTED if i % 4 == 1 else Status.PREPARED
        assert await s.create(trans=mk(g, status=status, tt=tt), branches=[])
    full = gids[2]  # room for no more ops: refused
    assert await s.add_branches(gid=full, now=T0, branches=[_step(full, "01", b"a")],
                                expect_status=Status.PREPARED)
    before = s.roundtrips
    calls = [s.add_branches(gid=g, now=T0 + 1, branches=[_step(g, "02", g.encode())],
                            expect_status=Status.PREPARED, expect_type=TransType.WORKFLOW,
                            max_ops=1 if g == full else None)
             for g in gids]
    got = await asyncio.gather(*calls)
    # a wrong status (i % 4 == 1), no room (gids[2]) or another type (i % 4 == 3) loses
    assert got == [i % 4 == 0 or (i % 4 == 2 and i != 2) for i in range(12)]
    assert s.roundtrips - before < 12
    for i, g in enumerate(gids):
        bs = await s.get_branches(gid=g)
        if got[i]:
            (b,) = bs
            assert (b.branch_id, b.op, b.status, b.data) == ("02", Op.ACTION, Status.SUCCEED,
                                                              g.encode())
            assert b.create_time == pytest.approx(T0 + 1)
            assert b.finish_time == pytest.approx(T0 + 1)
        else:
            assert [b.branch_id for b in bs] == (["01"] if g == full else [])


async def test_a_duplicate_branch_fails_only_its_add(batching: SqlStore) -> None:
    s = batching
    gids = [gid() for _ in range(5)]
    for g in gids:
        assert await s.create(trans=mk(g, status=Status.PREPARED, tt=TransType.WORKFLOW),
                              branches=[])
    dup = gids[3]
    assert await s.add_branches(gid=dup, now=T0, branches=[_step(dup, "01", b"first")],
                                expect_status=Status.PREPARED)
    calls = [s.add_branches(gid=g, now=T0 + 1, branches=[_step(g, "01", b"second")],
                            expect_status=Status.PREPARED) for g in gids]
    got = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(got[3], DuplicateBranch)
    assert [got[i] for i in (0, 1, 2, 4)] == [True] * 4
    assert [b.data for b in await s.get_branches(gid=dup)] == [b"first"]
    for g in gids:
        assert len(await s.get_branches(gid=g)) == 1


async def test_updates_expecting_a_type_in_a_batch(batching: SqlStore) -> None:
    # workflow submits (prepared -> succeed, only a workflow) sharing round trips
    s = batching
    gids = [gid() for _ in range(8)]
    for i, g in enumerate(gids):
        tt = TransType.MSG if i % 2 else TransType.WORKFLOW
        assert await s.create(trans=mk(g, status=Status.PREPARED, tt=tt), branches=[])
    before = s.roundtrips
    got = await asyncio.gather(*(
        s.update(gid=g, now=T0 + 1, expect_status=Status.PREPARED, expect_owner=None,
                 expect_type=TransType.WORKFLOW,
                 change=Change(status=Status.SUCCEED, result="cg=="))
        for g in gids))
    assert got == [i % 2 == 0 for i in range(8)]
    assert s.roundtrips - before < 8
    for i, g in enumerate(gids):
        t = await s.get(gid=g)
        assert t is not None
        assert (t.status, t.result) == ((Status.SUCCEED, "cg==") if i % 2 == 0
                                        else (Status.PREPARED, ""))
