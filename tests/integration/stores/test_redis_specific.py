"""RedisStore against the real Redis at 127.0.0.1:6379: every verb, plus what only Redis has
(TTLs, one round trip per verb, concurrent claimers, lazy index cleanup)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from dtmx.core.models import (
    Branch,
    BranchUpdate,
    Change,
    Op,
    ScanFilter,
    Status,
    Transaction,
    TransOptions,
    TransType,
)
from dtmx.errors import ConfigError, DuplicateBranch, StoreUnavailable
from dtmx.stores.base import Store
from dtmx.stores.redis_store import RedisStore
from tests.support.scratch import scratch
from tests.support.util import free_port

URL = os.environ.get("DTMX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_700_000_000.0


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys (and its partitions') deleted at the end."""
    with scratch("redis", "dtmx_store") as name:
        yield "{" + name + "}"


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(URL, prefix=prefix, finished_ttl=100.0, data_ttl=1000.0)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(URL)
    yield r
    await r.aclose()


def trans(
    gid: str | None = None,
    status: Status = Status.SUBMITTED,
    trans_type: TransType = TransType.SAGA,
    create_time: float = T0,
    next_cron_time: float | None = T0 + 10,
) -> Transaction:
    return Transaction(
        gid=gid or uuid.uuid4().hex,
        trans_type=trans_type,
        status=status,
        custom_data='{"x": 1}',
        options=TransOptions(timeout_to_fail=30, retry_count=2, branch_headers={"h": "v"}),
        create_time=create_time,
        update_time=create_time,
        next_cron_interval=10.0,
        next_cron_time=next_cron_time,
    )


def branch(gid: str, bid: str, op: Op, data: bytes = b"{}") -> Branch:
    return Branch(gid=gid, branch_id=bid, op=op, url=f"http://b/{bid}/{op}", data=data,
                  create_time=T0, update_time=T0)


def saga_branches(gid: str) -> list[Branch]:
    return [
        branch(gid, "01", Op.COMPENSATE, b"\xff\x00\n\xfe binary"),
        branch(gid, "01", Op.ACTION, b'{"a": 1}'),
        branch(gid, "02", Op.COMPENSATE),
        branch(gid, "02", Op.ACTION),
    ]


async def test_is_a_store(store: RedisStore) -> None:
    assert isinstance(store, Store)


async def test_create_get_roundtrip(store: RedisStore) -> None:
    t = trans()
    bs = saga_branches(t.gid)
    before = store.roundtrips
    assert await store.create(trans=t, branches=bs)
    assert store.roundtrips == before + 1
    assert await store.get(gid=t.gid) == t
    assert await store.get_branches(gid=t.gid) == bs
    assert await store.get(gid="nope-" + t.gid) is None
    assert await store.get_branches(gid="nope-" + t.gid) == []


async def test_create_twice_keeps_first(store: RedisStore) -> None:
    t = trans()
    assert await store.create(trans=t, branches=saga_branches(t.gid))
    other = trans(gid=t.gid, status=Status.PREPARED)
    assert not await store.create(trans=other, branches=[branch(t.gid, "09", Op.ACTION)])
    assert await store.get(gid=t.gid) == t
    assert len(await store.get_branches(gid=t.gid)) == 4


async def test_create_duplicate_branch_in_batch(store: RedisStore) -> None:
    t = trans()
    with pytest.raises(DuplicateBranch):
        await store.create(trans=t, branches=[branch(t.gid, "01", Op.ACTION)] * 2)
    assert await store.get(gid=t.gid) is None


async def test_update_cas(store: RedisStore) -> None:
    t = trans()
    await store.create(trans=t, branches=saga_branches(t.gid))
    await store.update(gid=t.gid, now=T0 + 1, expect_status=Status.SUBMITTED, expect_owner=None,
                       change=Change(owner="me"))
    bad = Change(status=Status.SUCCEED, result="r",
                 branches=(BranchUpdate("01", Op.ACTION, Status.SUCCEED),))
    # wrong status, then wrong owner: nothing is written
    assert not await store.update(gid=t.gid, now=T0 + 2, expect_status=Status.PREPARED,
                                  expect_owner=None, change=bad)
    assert not await store.update(gid=t.gid, now=T0 + 2, expect_status=Status.SUBMITTED,
                                  expect_owner="other", change=bad)
    assert not await store.update(gid="nope", now=T0 + 2, expect_status=Status.SUBMITTED,
                                  expect_owner=None, change=bad)
    got = await store.get(gid=t.gid)
    assert got is not None and got.status is Status.SUBMITTED and got.update_time == T0 + 1
    assert [b.status for b in await store.get_branches(gid=t.gid)] == [Status.PREPARED] * 4

    before = store.roundtrips
    ok = await store.update(
        gid=t.gid, now=T0 + 3, expect_status=Status.SUBMITTED, expect_owner="me",
        change=Change(next_cron_time=T0 + 50, next_cron_interval=20.0, retry_count=3,
                      rollback_reason="why",
                      branches=(BranchUpdate("01", Op.ACTION, Status.SUCCEED),
                                BranchUpdate("02", Op.ACTION, Status.FAILED))),
    )
    assert ok and store.roundtrips == before + 1
    got = await store.get(gid=t.gid)
    assert got is not None
    assert (got.update_time, got.next_cron_time, got.next_cron_interval) == (T0 + 3, T0 + 50, 20)
    assert got.options.retry_count == 3 and got.rollback_reason == "why"
    assert got.options.branch_headers == {"h": "v"} and got.owner == "me"
    bs = await store.get_branches(gid=t.gid)
    assert [b.status for b in bs] == [Status.PREPARED, Status.SUCCEED, Status.PREPARED,
                                      Status.FAILED]
    assert bs[1].finish_time == T0 + 3 and bs[1].update_time == T0 + 3
    assert bs[3].finish_time == T0 + 3 and bs[3].rollback_time is None
    assert bs[0].data == b"\xff\x00\n\xfe binary"


async def test_finish_sets_ttl_and_leaves_cron(store: RedisStore, raw: aioredis.Redis,
                                               prefix: str) -> None:
    t = trans(next_cron_time=T0)
    await store.create(trans=t, branches=saga_branches(t.gid))
    tag = store.layout.tag(t.gid)
    assert 900_000 < await raw.pttl(f"{tag}:g:{t.gid}") <= 1_000_000
    assert 900_000 < await raw.pttl(f"{tag}:b:{t.gid}") <= 1_000_000
    assert await store.update(gid=t.gid, now=T0 + 5, expect_status=Status.SUBMITTED,
                              expect_owner=None, change=Change(status=Status.SUCCEED))
    for key in (f"{tag}:g:{t.gid}", f"{tag}:b:{t.gid}"):
        assert 90_000 < await raw.pttl(key) <= 100_000
    got = await store.get(gid=t.gid)
    assert got is not None and got.finish_time == T0 + 5 and got.rollback_time is None
    assert await store.claim_due(now=T0 + 100, lease=5, owner="o", limit=10) == []
    assert not await store.reset_next_cron_time(gid=t.gid, now=T0 + 100)


async def test_add_branches(store: RedisStore) -> None:
    t = trans(status=Status.PREPARED)
    await store.create(trans=t, branches=[])
    one = [branch(t.gid, "a", Op.TRY), branch(t.gid, "a", Op.CONFIRM)]
    assert not await store.add_branches(gid=t.gid, now=T0, branches=one,
                                        expect_status=Status.SUBMITTED)
    assert not await store.add_branches(gid="nope", now=T0, branches=one,
                                        expect_status=Status.PREPARED)
    assert await store.get_branches(gid=t.gid) == []
    assert await store.add_branches(gid=t.gid, now=T0, branches=one,
                                    expect_status=Status.PREPARED)
    two = [branch(t.gid, "b", Op.TRY), branch(t.gid, "a", Op.CONFIRM)]
    with pytest.raises(DuplicateBranch):
        await store.add_branches(gid=t.gid, now=T0, branches=two, expect_status=Status.PREPARED)
    assert await store.get_branches(gid=t.gid) == one
    three = [branch(t.gid, "b", Op.TRY)]
    assert await store.add_branches(gid=t.gid, now=T0, branches=three,
                                    expect_status=Status.PREPARED)
    assert await store.get_branches(gid=t.gid) == one + three


async def test_claim_due(store: RedisStore) -> None:
    due = [trans(next_cron_time=T0 + i) for i in range(3)]
    later = trans(next_cron_time=T0 + 100)
    for t in [*due, later]:
        await store.create(trans=t, branches=[])
    before = store.roundtrips
    got = await store.claim_due(now=T0 + 10, lease=30, owner="o1", limit=2)
    # one to register the server, one lease call per partition it holds, one claim per
    # partition with due work (all pipelined: one send per node each time)
    assert store.roundtrips <= before + 1 + store.layout.partitions + 2
    assert len(got) == 2 and {g.gid for g in got} < {t.gid for t in due}
    assert all(g.owner == "o1" and g.next_cron_time == T0 + 40 for g in got)
    got2 = await store.claim_due(now=T0 + 10, lease=30, owner="o2", limit=10)
    assert {g.gid for g in got + got2} == {t.gid for t in due}
    assert await store.claim_due(now=T0 + 10, lease=30, owner="o3", limit=10) == []
    stored = await store.get(gid=got2[0].gid)
    assert stored is not None and stored.owner == "o2" and stored.update_time == T0 + 10
    # the lease ran out: claimable again, including the later one
    got = await store.claim_due(now=T0 + 100, lease=0, owner="o4", limit=10)
    assert {g.gid for g in got} == {t.gid for t in [*due, later]}


async def test_claim_due_concurrent(prefix: str, store: RedisStore) -> None:
    ts = [trans(next_cron_time=T0) for _ in range(30)]
    for t in ts:
        await store.create(trans=t, branches=[])
    other = RedisStore(URL, prefix=prefix)
    await other.open()
    gids: list[str] = []
    try:
        # two servers: they divide the partitions between them over a few rounds (leases
        # of the partitions neither holds yet are taken round by round)
        # (time moves on so a partition given up is looked at again: lease / 4; the rows
        # claimed stay leased through all four rounds)
        for r in range(4):
            for _ in range(10):  # claim until dry at this time
                results = await asyncio.gather(
                    *[s.claim_due(now=T0 + 1 + 300 * r, lease=1000, owner=f"o{i}", limit=4)
                      for i in range(6) for s in (store, other)]
                )
                got = [g.gid for r in results for g in r]
                gids += got
                if not got:
                    break
    finally:
        await other.close()
    assert len(gids) == len(set(gids)) == 30


async def test_reset_cron_times(store: RedisStore) -> None:
    far = [trans(next_cron_time=T0 + 1000 + i) for i in range(3)]
    near = trans(next_cron_time=T0 + 5)
    for t in [*far, near]:
        await store.create(trans=t, branches=[])
    assert await store.reset_cron_time(now=T0, after=100, limit=2) == (2, True)
    assert await store.reset_cron_time(now=T0, after=100, limit=2) == (1, False)
    assert await store.reset_cron_time(now=T0, after=100, limit=2) == (0, False)
    got = await store.get(gid=far[2].gid)
    assert got is not None and got.next_cron_time == T0 and got.update_time == T0
    assert await store.reset_next_cron_time(gid=near.gid, now=T0 - 1)
    assert not await store.reset_next_cron_time(gid="nope", now=T0)
    claimed = await store.claim_due(now=T0 - 1, lease=10, owner="o", limit=10)
    assert [c.gid for c in claimed] == [near.gid]


async def test_scan_pagination_and_filters(store: RedisStore, raw: aioredis.Redis,
                                           prefix: str) -> None:
    ts = [trans(create_time=T0 + i,
                status=Status.SUBMITTED if i % 2 else Status.PREPARED,
                trans_type=TransType.SAGA if i < 5 else TransType.TCC)
          for i in range(9)]
    for t in ts:
        await store.create(trans=t, branches=[])
    newest_first = [t.gid for t in reversed(ts)]
    seen: list[str] = []
    pos = ""
    for _ in range(10):
        page, pos = await store.scan(position=pos, limit=4, filters=ScanFilter())
        seen += [p.gid for p in page]
        if not pos:
            break
    assert seen == newest_first
    # an exact multiple of the page size ends with an empty position, not an empty page
    page, pos = await store.scan(position="", limit=9, filters=ScanFilter())
    assert len(page) == 9 and pos == ""

    f = ScanFilter(status=Status.SUBMITTED, trans_type=TransType.SAGA)
    page, pos = await store.scan(position="", limit=10, filters=f)
    assert [p.gid for p in page] == [ts[3].gid, ts[1].gid] and pos == ""
    f = ScanFilter(create_time_start=T0 + 2, create_time_end=T0 + 4)
    page, pos = await store.scan(position="", limit=2, filters=f)
    assert [p.gid for p in page] == [ts[4].gid, ts[3].gid] and pos
    page, pos = await store.scan(position=pos, limit=2, filters=f)
    assert [p.gid for p in page] == [ts[2].gid] and pos == ""

    # a key Redis expired is skipped and dropped from the index
    tag = store.layout.tag(ts[8].gid)
    await raw.delete(f"{tag}:g:{ts[8].gid}")
    page, pos = await store.scan(position="", limit=1, filters=ScanFilter())
    assert [p.gid for p in page] == [ts[7].gid]
    assert await raw.zscore(f"{tag}:all", ts[8].gid) is None


async def test_expire_finished(store: RedisStore, raw: aioredis.Redis, prefix: str) -> None:
    ts = [trans() for _ in range(3)]
    for t in ts:
        await store.create(trans=t, branches=saga_branches(t.gid))
    for i, t in enumerate(ts[:2]):
        await store.update(gid=t.gid, now=T0 + i, expect_status=Status.SUBMITTED,
                           expect_owner=None, change=Change(status=Status.FAILED))
    assert await store.expire_finished(before=T0 + 1, limit=10) == 1
    assert await store.get(gid=ts[0].gid) is None
    assert await store.get_branches(gid=ts[0].gid) == []
    assert await store.get(gid=ts[1].gid) is not None
    assert await store.expire_finished(before=T0 + 10, limit=10) == 1
    assert await store.expire_finished(before=T0 + 10, limit=10) == 0
    assert await store.get(gid=ts[2].gid) is not None
    page, _ = await store.scan(position="", limit=10, filters=ScanFilter())
    assert [p.gid for p in page] == [ts[2].gid]


async def test_kv(store: RedisStore) -> None:
    assert await store.kv_find(cat="topics", key="t1") is None
    assert await store.kv_create(cat="topics", key="t1", value="v\n1", now=T0)
    assert not await store.kv_create(cat="topics", key="t1", value="x", now=T0)
    kv = await store.kv_find(cat="topics", key="t1")
    assert kv is not None and (kv.v, kv.version, kv.create_time) == ("v\n1", 1, T0)
    assert not await store.kv_update(cat="topics", key="t1", value="w", expect_version=2,
                                     now=T0 + 1)
    assert not await store.kv_update(cat="topics", key="zz", value="w", expect_version=1,
                                     now=T0 + 1)
    assert await store.kv_update(cat="topics", key="t1", value="w", expect_version=1,
                                 now=T0 + 1)
    kv = await store.kv_find(cat="topics", key="t1")
    assert kv is not None and (kv.v, kv.version, kv.create_time, kv.update_time) == (
        "w", 2, T0, T0 + 1)
    for k in ("t3", "t2", "t4"):
        await store.kv_create(cat="topics", key=k, value=k, now=T0)
    await store.kv_create(cat="other", key="t9", value="o", now=T0)
    page, pos = await store.kv_scan(cat="topics", position="", limit=3)
    assert [x.k for x in page] == ["t4", "t2", "t3"] and pos
    page, pos = await store.kv_scan(cat="topics", position=pos, limit=3)
    assert [x.k for x in page] == ["t1"] and pos == ""
    assert await store.kv_delete(cat="topics", key="t1")
    assert not await store.kv_delete(cat="topics", key="t1")
    page, pos = await store.kv_scan(cat="topics", position="", limit=10)
    assert [x.k for x in page] == ["t4", "t2", "t3"] and pos == ""
    page, pos = await store.kv_scan(cat="topics", position="", limit=3)
    assert len(page) == 3 and pos == ""


async def test_burst_on_one_connection(prefix: str) -> None:
    """Many concurrent verbs share one pipelined connection, each gets its own answer."""
    s = RedisStore(URL, prefix=prefix, pool_size=1)
    try:
        ts = [trans() for _ in range(50)]
        assert all(await asyncio.gather(*[s.create(trans=t, branches=saga_branches(t.gid))
                                          for t in ts]))
        got = await asyncio.gather(*[s.get(gid=t.gid) for t in ts],
                                   *[s.get_branches(gid=t.gid) for t in ts])
        assert got == [*ts, *[saga_branches(t.gid) for t in ts]]
    finally:
        await s.close()


async def test_unavailable() -> None:
    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", prefix="{dtmx-rs-down}")
    with pytest.raises(StoreUnavailable):
        await s.open()
    with pytest.raises(StoreUnavailable):
        await s.ping()
    with pytest.raises(StoreUnavailable):
        await s.create(trans=trans(), branches=[])
    await s.close()


async def test_partitions_held_by_one_server_until_it_closes(prefix: str,
                                                             store: RedisStore) -> None:
    t = trans(next_cron_time=T0)
    await store.create(trans=t, branches=[])
    assert len(await store.claim_due(now=T0 + 1, lease=60, owner="a", limit=10)) == 1
    assert await store.reset_next_cron_time(gid=t.gid, now=T0 + 1)
    other = RedisStore(URL, prefix=prefix)
    await other.open()
    try:
        # every partition is leased to `store`: the other server claims nothing
        assert await other.claim_due(now=T0 + 2, lease=60, owner="b", limit=10) == []
        await store.close()  # gives its partitions back
        # looked at again a quarter lease later, long before the 60 s leases would end
        got = await other.claim_due(now=T0 + 2 + 15, lease=60, owner="b", limit=10)
        assert [g.gid for g in got] == [t.gid]
    finally:
        await other.close()


async def test_partition_count_is_fixed_at_creation(prefix: str, store: RedisStore) -> None:
    other = RedisStore(URL, prefix=prefix, partitions=32)
    with pytest.raises(ConfigError, match=r"created with 64 partitions.*says 32"):
        await other.open()
    await other.close()
    with pytest.raises(ConfigError, match="power of two"):
        RedisStore(URL, prefix=prefix, partitions=48)
