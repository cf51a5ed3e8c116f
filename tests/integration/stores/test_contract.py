"""The Store contract (dtmx.stores.base), run on every backend by the `store` fixture."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest

from dtmx.core.models import (
    Branch,
    BranchUpdate,
    Change,
    Op,
    Protocol,
    ScanFilter,
    Status,
    Transaction,
    TransOptions,
    TransType,
)
from dtmx.errors import DuplicateBranch
from dtmx.stores.base import Store

T0 = 1_700_000_000.0  # a fixed "now": stores must use the times they are given
EPS = 1e-5  # SQL time columns keep microseconds


def gid() -> str:
    return "g-" + uuid.uuid4().hex


def mk(
    g: str,
    *,
    status: Status = Status.SUBMITTED,
    tt: TransType = TransType.SAGA,
    now: float = T0,
    next_cron: float | None = None,
    owner: str = "",
) -> Transaction:
    return Transaction(
        gid=g,
        trans_type=tt,
        status=status,
        create_time=now,
        update_time=now,
        next_cron_time=now + 10 if next_cron is None else next_cron,
        next_cron_interval=10.0,
        owner=owner,
    )


def br(g: str, branch_id: str, op: Op, data: bytes = b"{}", url: str = "http://b/x") -> Branch:
    return Branch(gid=g, branch_id=branch_id, op=op, url=url, data=data, create_time=T0,
                  update_time=T0)


def saga_branches(g: str, n: int = 2) -> list[Branch]:
    out = []
    for i in range(1, n + 1):
        out += [br(g, f"{i:02d}", Op.COMPENSATE), br(g, f"{i:02d}", Op.ACTION)]
    return out


def approx(x: float | None) -> object:
    return pytest.approx(x, abs=EPS)


async def test_is_a_store(store: Store) -> None:
    assert isinstance(store, Store)
    await store.ping()


# ---- create / get -------------------------------------------------------------------------
async def test_create_and_get_round_trip_every_field(store: Store) -> None:
    g = gid()
    t = Transaction(
        gid=g,
        trans_type=TransType.TCC,
        status=Status.PREPARED,
        protocol=Protocol.GRPC,
        query_prepared="http://q/query",
        custom_data='{"concurrent":true,"orders":{"1":[0]}}',
        options=TransOptions(
            wait_result=True,
            timeout_to_fail=35,
            request_timeout=3,
            retry_interval=10,
            retry_limit=5,
            retry_count=2,
            concurrent=True,
            branch_headers={"X-A": "1", "x-b": "ünï"},
            passthrough_headers=["authorization"],
        ),
        create_time=T0 + 0.123456,
        update_time=T0 + 0.5,
        next_cron_interval=2.5,
        next_cron_time=T0 + 35.25,
        owner="srv-1",
        rollback_reason="why",
        result="res",
        ext_data='{"k":"v"}',
    )
    assert await store.create(trans=t, branches=[]) is True
    got = await store.get(gid=g)
    assert got is not None
    times = ("create_time", "update_time", "next_cron_time")
    for name in times:
        assert getattr(got, name) == approx(getattr(t, name))
    assert got.finish_time is None and got.rollback_time is None
    same = {f: getattr(t, f) for f in times}
    assert replace(got, **same) == t


async def test_create_twice_second_is_false_and_changes_nothing(store: Store) -> None:
    g = gid()
    assert await store.create(trans=mk(g), branches=saga_branches(g)) is True
    other = replace(mk(g, status=Status.PREPARED, tt=TransType.MSG), custom_data="other")
    assert await store.create(trans=other, branches=[br(g, "09", Op.ACTION)]) is False
    got = await store.get(gid=g)
    assert got is not None
    assert (got.status, got.trans_type, got.custom_data) == (Status.SUBMITTED, TransType.SAGA, "")
    assert [b.key for b in await store.get_branches(gid=g)] == [
        b.key for b in saga_branches(g)
    ]


async def test_create_with_duplicate_branches_stores_nothing(store: Store) -> None:
    g = gid()
    with pytest.raises(DuplicateBranch):
        await store.create(trans=mk(g), branches=[br(g, "01", Op.ACTION),
                                                  br(g, "01", Op.ACTION, b"again")])
    assert await store.get(gid=g) is None
    assert await store.get_branches(gid=g) == []
    # the same among 41 rows (SQLite: one multi-row INSERT, not row by row)
    with pytest.raises(DuplicateBranch):
        await store.create(trans=mk(g), branches=[*saga_branches(g, 20),
                                                  br(g, "07", Op.ACTION, b"again")])
    assert await store.get(gid=g) is None
    assert await store.get_branches(gid=g) == []
    # the store (and its connection) is fine afterwards
    assert await store.create(trans=mk(g), branches=saga_branches(g)) is True


async def test_create_with_many_branches(store: Store) -> None:
    g = gid()
    many = saga_branches(g, 650)  # 1,300 rows: more than one multi-row INSERT
    assert await store.create(trans=mk(g), branches=many) is True
    assert [b.key for b in await store.get_branches(gid=g)] == [b.key for b in many]


async def test_a_large_create_keeps_the_create_contract(store: Store) -> None:
    # 2,500 rows: over SQLite's OFF_LOOP_ROWS, so its worker-thread path is held to it too
    g = gid()
    many = saga_branches(g, 1250)
    assert await store.create(trans=mk(g), branches=many) is True
    assert await store.create(trans=mk(g, status=Status.PREPARED), branches=many) is False
    got = await store.get(gid=g)
    assert got is not None and got.status is Status.SUBMITTED
    assert [b.key for b in await store.get_branches(gid=g)] == [b.key for b in many]
    g2 = gid()
    twice = [*saga_branches(g2, 1250), br(g2, "01", Op.ACTION)]
    with pytest.raises(DuplicateBranch):
        await store.create(trans=mk(g2), branches=twice)
    assert await store.get(gid=g2) is None
    assert await store.get_branches(gid=g2) == []


async def test_a_large_create_keeps_each_rows_own_values(store: Store) -> None:
    # most values shared by all rows, some not: each row reads back as it was given
    g = gid()
    many = [
        br(g, f"{i:04d}", Op.ACTION, data=b"{}" if i % 7 else f'{{"i":{i}}}'.encode(),
           url="http://b/x" if i % 5 else f"http://b/{i}")
        for i in range(1, 1502)
    ]
    assert await store.create(trans=mk(g), branches=many) is True
    got = await store.get_branches(gid=g)
    assert [(b.key, b.url, b.data, b.status) for b in got] == [
        (b.key, b.url, b.data, b.status) for b in many]


@pytest.mark.parametrize("mixed", [False, True])
async def test_a_create_keeps_each_rows_status_and_times(store: Store, mixed: bool) -> None:
    # shared by all rows (with finish and rollback times set), or differing from row to
    # row: stores may send shared values once, and each row still reads back as given
    g = gid()
    many = []
    for i in range(1, 302):
        k = i % 3 if mixed else 1
        many.append(replace(
            br(g, f"{i:03d}", Op.ACTION), status=(Status.PREPARED, Status.SUCCEED,
                                                   Status.FAILED)[k],
            update_time=T0 + k, finish_time=T0 + 2 * k if k else None,
            rollback_time=T0 + 3 * k if k == 1 else None))
    assert await store.create(trans=mk(g), branches=many) is True
    got = await store.get_branches(gid=g)
    assert [(b.key, b.status) for b in got] == [(b.key, b.status) for b in many]
    for b, want in zip(got, many, strict=True):
        assert b.update_time == approx(want.update_time)
        assert b.create_time == approx(want.create_time)
        for name in ("finish_time", "rollback_time"):
            w = getattr(want, name)
            assert getattr(b, name) == (None if w is None else approx(w)), (b.key, name)


async def test_a_create_keeps_text_that_needs_quoting(store: Store) -> None:
    # stores may pack a create's columns into one text (JSON, delimited): quotes,
    # backslashes, separators and non-ASCII come back as given
    g = gid()
    odd = ['a"b', "c\\d", "e,f", "g\x1fh", "ü€𝄞", "{}", "[1]", "null", ""]
    many = [br(g, f"{i:02d}{o}", Op.ACTION, data=o.encode(), url=f"http://b/{o}\n{i}")
            for i, o in enumerate(odd)]
    assert await store.create(trans=mk(g), branches=many) is True
    got = await store.get_branches(gid=g)
    assert [(b.branch_id, b.url, b.data) for b in got] == [
        (b.branch_id, b.url, b.data) for b in many]


async def test_missing_gid(store: Store) -> None:
    assert await store.get(gid=gid()) is None
    assert await store.get_branches(gid=gid()) == []


async def test_branches_keep_order_and_bytes(store: Store) -> None:
    g = gid()
    payloads = [b"\xff\x00\xfe\x80 not utf-8", b"", '{"a":"ü"}'.encode(), bytes(range(256))]
    branches = [
        br(g, "03", Op.TRY, payloads[0]),
        br(g, "01", Op.CONFIRM, payloads[1]),
        br(g, "02", Op.CANCEL, payloads[2], url=""),
        br(g, "01", Op.TRY, payloads[3]),
    ]
    assert await store.create(trans=mk(g, status=Status.PREPARED), branches=branches)
    got = await store.get_branches(gid=g)
    assert [(b.branch_id, b.op, b.data, b.url) for b in got] == [
        (b.branch_id, b.op, b.data, b.url) for b in branches
    ]
    assert all(b.status is Status.PREPARED and b.gid == g for b in got)
    assert all(b.create_time == approx(T0) for b in got)


# ---- update -----------------------------------------------------------------------------
async def test_update_cas_on_status(store: Store) -> None:
    g = gid()
    await store.create(trans=mk(g), branches=saga_branches(g))
    change = Change(
        status=Status.ABORTING,
        rollback_reason="boom",
        branches=(BranchUpdate("01", Op.ACTION, Status.FAILED),),
    )
    assert not await store.update(
        gid=g, now=T0 + 1, expect_status=Status.PREPARED, expect_owner=None, change=change
    )
    got = await store.get(gid=g)
    assert got is not None
    assert (got.status, got.rollback_reason, got.update_time) == (Status.SUBMITTED, "", T0)
    assert all(b.status is Status.PREPARED for b in await store.get_branches(gid=g))

    assert await store.update(
        gid=g, now=T0 + 1, expect_status=Status.SUBMITTED, expect_owner=None, change=change
    )
    got = await store.get(gid=g)
    assert got is not None
    assert (got.status, got.rollback_reason) == (Status.ABORTING, "boom")
    assert got.update_time == approx(T0 + 1)
    branches = {b.key: b for b in await store.get_branches(gid=g)}
    assert branches[("01", Op.ACTION)].status is Status.FAILED
    assert branches[("01", Op.COMPENSATE)].status is Status.PREPARED


async def test_update_cas_on_owner(store: Store) -> None:
    g = gid()
    await store.create(trans=mk(g, owner="a"), branches=saga_branches(g))
    change = Change(
        next_cron_time=T0 + 99,
        owner="",
        branches=(BranchUpdate("01", Op.ACTION, Status.SUCCEED),),
    )
    assert not await store.update(
        gid=g, now=T0 + 1, expect_status=Status.SUBMITTED, expect_owner="b", change=change
    )
    got = await store.get(gid=g)
    assert got is not None
    assert (got.owner, got.next_cron_time) == ("a", approx(T0 + 10))
    assert all(b.status is Status.PREPARED for b in await store.get_branches(gid=g))

    assert await store.update(
        gid=g, now=T0 + 1, expect_status=Status.SUBMITTED, expect_owner="a", change=change
    )
    got = await store.get(gid=g)
    assert got is not None
    assert (got.owner, got.next_cron_time) == ("", approx(T0 + 99))
    b = {b.key: b for b in await store.get_branches(gid=g)}[("01", Op.ACTION)]
    assert b.status is Status.SUCCEED
    assert b.finish_time == approx(T0 + 1)
    assert b.update_time == approx(T0 + 1)
    # expect_owner=None ignores the owner
    assert await store.update(
        gid=g, now=T0 + 2, expect_status=Status.SUBMITTED, expect_owner=None,
        change=Change(owner="z"),
    )
    got = await store.get(gid=g)
    assert got is not None and got.owner == "z"


async def test_update_cas_on_type(store: Store) -> None:
    # a workflow's submit: prepared -> succeed with its result, only if it is a workflow
    g = gid()
    await store.create(trans=mk(g, status=Status.PREPARED, tt=TransType.TCC), branches=[])
    change = Change(status=Status.SUCCEED, result="cmVzdWx0")
    assert not await store.update(gid=g, now=T0 + 1, expect_status=Status.PREPARED,
                                  expect_owner=None, expect_type=TransType.WORKFLOW,
                                  change=change)
    got = await store.get(gid=g)
    assert got is not None and got.status is Status.PREPARED and got.result == ""
    w = gid()
    await store.create(trans=mk(w, status=Status.PREPARED, tt=TransType.WORKFLOW), branches=[])
    assert await store.update(gid=w, now=T0 + 1, expect_status=Status.PREPARED,
                              expect_owner=None, expect_type=TransType.WORKFLOW, change=change)
    got = await store.get(gid=w)
    assert got is not None and (got.status, got.result) == (Status.SUCCEED, "cmVzdWx0")
    assert got.finish_time == approx(T0 + 1)
    # the type is checked together with the status and owner
    assert not await store.update(gid=g, now=T0 + 2, expect_status=Status.PREPARED,
                                  expect_owner="x", expect_type=TransType.TCC,
                                  change=Change(owner="y"))
    assert await store.update(gid=g, now=T0 + 2, expect_status=Status.PREPARED,
                              expect_owner=None, expect_type=TransType.TCC,
                              change=Change(owner="y"))


async def test_update_sets_finish_and_rollback_time(store: Store) -> None:
    g1, g2 = gid(), gid()
    await store.create(trans=mk(g1), branches=[])
    await store.create(trans=mk(g2, status=Status.ABORTING), branches=[])
    assert await store.update(
        gid=g1, now=T0 + 5, expect_status=Status.SUBMITTED, expect_owner=None,
        change=Change(status=Status.SUCCEED, result="ok"),
    )
    assert await store.update(
        gid=g2, now=T0 + 6, expect_status=Status.ABORTING, expect_owner=None,
        change=Change(status=Status.FAILED),
    )
    t1, t2 = await store.get(gid=g1), await store.get(gid=g2)
    assert t1 is not None and t2 is not None
    assert (t1.status, t1.result, t1.rollback_time) == (Status.SUCCEED, "ok", None)
    assert t1.finish_time == approx(T0 + 5) and t1.update_time == approx(T0 + 5)
    assert (t2.status, t2.finish_time) == (Status.FAILED, None)
    assert t2.rollback_time == approx(T0 + 6)


async def test_branch_ops_that_end_get_finish_time(store: Store) -> None:
    # DTM stamps finish_time on a branch op whichever way it ends
    g = gid()
    await store.create(trans=mk(g), branches=[
        Branch(gid=g, branch_id="01", op=Op.ACTION, url="u", data=b""),
        Branch(gid=g, branch_id="02", op=Op.ACTION, url="u", data=b"")])
    assert await store.update(
        gid=g, now=T0 + 7, expect_status=Status.SUBMITTED, expect_owner=None,
        change=Change(branches=(BranchUpdate("01", Op.ACTION, Status.SUCCEED),
                                BranchUpdate("02", Op.ACTION, Status.FAILED))))
    bs = await store.get_branches(gid=g)
    assert [b.finish_time for b in bs] == [approx(T0 + 7), approx(T0 + 7)]


async def test_update_retry_count_and_interval_keep_other_options(store: Store) -> None:
    g = gid()
    t = replace(mk(g), options=TransOptions(retry_interval=7, branch_headers={"h": "v"}))
    await store.create(trans=t, branches=[])
    assert await store.update(
        gid=g, now=T0 + 1, expect_status=Status.SUBMITTED, expect_owner=None,
        change=Change(retry_count=3, next_cron_interval=0.25),
    )
    got = await store.get(gid=g)
    assert got is not None
    assert got.options == TransOptions(retry_interval=7, branch_headers={"h": "v"}, retry_count=3)
    assert got.next_cron_interval == 0.25


async def test_update_missing_gid_is_false(store: Store) -> None:
    assert not await store.update(
        gid=gid(), now=T0, expect_status=Status.SUBMITTED, expect_owner=None,
        change=Change(status=Status.SUCCEED, branches=(BranchUpdate("01", Op.ACTION,
                                                                      Status.SUCCEED),)),
    )


async def test_concurrent_updates_only_one_wins(store: Store) -> None:
    g = gid()
    await store.create(trans=mk(g), branches=saga_branches(g, 1))

    async def attempt(status: Status) -> bool:
        return await store.update(
            gid=g, now=T0 + 1, expect_status=Status.SUBMITTED, expect_owner=None,
            change=Change(status=status, branches=(BranchUpdate("01", Op.ACTION, status),)),
        )

    results = await asyncio.gather(*(attempt(s) for s in [Status.SUCCEED, Status.FAILED] * 3))
    assert sum(results) == 1
    got = await store.get(gid=g)
    assert got is not None
    b = {b.key: b for b in await store.get_branches(gid=g)}[("01", Op.ACTION)]
    assert b.status is got.status  # the winner wrote both, the losers nothing


# ---- take --------------------------------------------------------------------------------
async def test_take_changes_and_returns_the_row_and_its_branches(store: Store) -> None:
    g = gid()
    t = replace(mk(g, status=Status.PREPARED, tt=TransType.TCC), custom_data="cd",
                options=TransOptions(retry_interval=7, branch_headers={"h": "v"}))
    branches = [br(g, "02", Op.CANCEL, b"\xff\x00"), br(g, "01", Op.CONFIRM, b""),
                br(g, "01", Op.CANCEL)]
    await store.create(trans=t, branches=branches)
    before = store.roundtrips
    got = await store.take(
        gid=g, now=T0 + 3, expect_status=Status.PREPARED, expect_type=TransType.TCC,
        change=Change(status=Status.SUBMITTED, owner="me", next_cron_time=T0 + 33),
    )
    assert store.roundtrips == before + 1
    assert got is not None
    trans, bs = got
    assert (trans.gid, trans.status, trans.owner, trans.trans_type) == (
        g, Status.SUBMITTED, "me", TransType.TCC)
    assert (trans.custom_data, trans.options) == ("cd", t.options)
    assert trans.next_cron_time == approx(T0 + 33) and trans.update_time == approx(T0 + 3)
    assert trans.create_time == approx(T0)
    assert (trans.finish_time, trans.rollback_time) == (None, None)
    assert [(b.key, b.data, b.status) for b in bs] == [
        (b.key, b.data, Status.PREPARED) for b in branches
    ]
    assert all(b.gid == g for b in bs)
    # what take returned is what is stored
    assert await store.get(gid=g) == trans
    assert await store.get_branches(gid=g) == bs


async def test_take_compares_status_and_type_and_writes_nothing_otherwise(store: Store) -> None:
    g = gid()
    await store.create(trans=mk(g, status=Status.PREPARED, tt=TransType.MSG, owner="o"),
                       branches=saga_branches(g, 1))
    change = Change(status=Status.SUBMITTED, owner="me", next_cron_time=T0 + 33)
    before = store.roundtrips
    assert await store.take(gid=gid(), now=T0 + 1, expect_status=Status.PREPARED,
                            change=change) is None
    assert store.roundtrips == before + 1
    assert await store.take(gid=g, now=T0 + 1, expect_status=Status.SUBMITTED,
                            change=change) is None
    assert await store.take(gid=g, now=T0 + 1, expect_status=Status.PREPARED,
                            expect_type=TransType.TCC, change=change) is None
    stored = await store.get(gid=g)
    assert stored is not None
    assert (stored.status, stored.owner, stored.update_time) == (Status.PREPARED, "o", T0)
    assert stored.next_cron_time == approx(T0 + 10)
    # without expect_type any type matches; the owner is never compared
    got = await store.take(gid=g, now=T0 + 1, expect_status=Status.PREPARED, change=change)
    assert got is not None and got[0].status is Status.SUBMITTED and got[0].owner == "me"
    assert len(got[1]) == 2
    with pytest.raises(ValueError):
        await store.take(
            gid=g, now=T0 + 2, expect_status=Status.SUBMITTED,
            change=Change(branches=(BranchUpdate("01", Op.ACTION, Status.SUCCEED),)),
        )


async def test_take_without_branches_and_to_a_final_status(store: Store) -> None:
    g = gid()
    await store.create(trans=mk(g, status=Status.PREPARED, tt=TransType.MSG), branches=[])
    got = await store.take(
        gid=g, now=T0 + 4, expect_status=Status.PREPARED, expect_type=TransType.MSG,
        change=Change(status=Status.FAILED, rollback_reason="no"),
    )
    assert got is not None
    trans, bs = got
    assert bs == []
    assert (trans.status, trans.rollback_reason, trans.finish_time) == (
        Status.FAILED, "no", None)
    assert trans.rollback_time == approx(T0 + 4)
    # a finished transaction is not due any more
    assert await store.claim_due(now=T0 + 1000, lease=5, owner="x", limit=10) == []
    assert await store.get(gid=g) == trans


async def test_concurrent_takes_only_one_wins(store: Store) -> None:
    g = gid()
    await store.create(trans=mk(g, status=Status.PREPARED, tt=TransType.TCC),
                       branches=saga_branches(g, 1))

    async def attempt(i: int) -> tuple[Transaction, list[Branch]] | None:
        return await store.take(
            gid=g, now=T0 + 1, expect_status=Status.PREPARED,
            change=Change(status=Status.SUBMITTED, owner=f"o{i}"),
        )

    results = [r for r in await asyncio.gather(*(attempt(i) for i in range(6))) if r]
    assert len(results) == 1
    stored = await store.get(gid=g)
    assert stored is not None and stored.owner == results[0][0].owner


# ---- add_branches ------------------------------------------------------------------------
async def test_add_branches_expect_type(store: Store) -> None:
    g = gid()
    await store.create(trans=mk(g, status=Status.PREPARED, tt=TransType.TCC), branches=[])
    xa = [br(g, "01", Op.COMMIT), br(g, "01", Op.ROLLBACK)]
    before = store.roundtrips
    # another type: nothing written
    assert not await store.add_branches(gid=g, now=T0 + 1, branches=xa,
                                        expect_status=Status.PREPARED,
                                        expect_type=TransType.XA)
    assert await store.get_branches(gid=g) == []
    tcc = [br(g, "01", Op.CONFIRM), br(g, "01", Op.CANCEL)]
    assert await store.add_branches(gid=g, now=T0 + 1, branches=tcc,
                                    expect_status=Status.PREPARED,
                                    expect_type=TransType.TCC)
    assert store.roundtrips - before == 3  # each add_branches one round trip
    assert [b.key for b in await store.get_branches(gid=g)] == [b.key for b in tcc]
    # the type is checked together with the status: a wrong status still fails
    assert not await store.add_branches(gid=g, now=T0 + 2, branches=[br(g, "02", Op.CONFIRM)],
                                        expect_status=Status.SUBMITTED,
                                        expect_type=TransType.TCC)


async def test_add_branches_max_ops_counts_every_row(store: Store) -> None:
    g = gid()
    first = [br(g, "01", Op.CONFIRM), br(g, "01", Op.CANCEL)]  # rows from create count too
    await store.create(trans=mk(g, status=Status.PREPARED, tt=TransType.TCC), branches=first)
    second = [br(g, "02", Op.CONFIRM), br(g, "02", Op.CANCEL)]
    before = store.roundtrips
    assert await store.add_branches(gid=g, now=T0 + 1, branches=second,
                                    expect_status=Status.PREPARED, max_ops=4)  # 4 <= 4
    third = [br(g, "03", Op.CONFIRM), br(g, "03", Op.CANCEL)]
    # 6 > 4 (and 6 > 5): refused, nothing written, the transaction as it was
    for limit in (4, 5):
        assert not await store.add_branches(gid=g, now=T0 + 2, branches=third,
                                            expect_status=Status.PREPARED, max_ops=limit)
    assert store.roundtrips - before == 3  # each add_branches one round trip
    assert [b.key for b in await store.get_branches(gid=g)] == [b.key for b in first + second]
    t = await store.get(gid=g)
    assert t is not None and t.status is Status.PREPARED
    # exactly at the bound is allowed; without max_ops there is no bound
    assert await store.add_branches(gid=g, now=T0 + 3, branches=third[:1],
                                    expect_status=Status.PREPARED, max_ops=5)
    assert await store.add_branches(gid=g, now=T0 + 3, branches=third[1:],
                                    expect_status=Status.PREPARED)
    assert len(await store.get_branches(gid=g)) == 6
    # a batch larger than the bound on its own is refused on an empty transaction too
    g2 = gid()
    await store.create(trans=mk(g2, status=Status.PREPARED, tt=TransType.TCC), branches=[])
    assert not await store.add_branches(gid=g2, now=T0 + 1, branches=[
        br(g2, "01", Op.CONFIRM), br(g2, "01", Op.CANCEL)], expect_status=Status.PREPARED,
        max_ops=1)
    assert await store.get_branches(gid=g2) == []


async def test_add_branches(store: Store) -> None:
    g = gid()
    first = [br(g, "01", Op.CONFIRM), br(g, "01", Op.CANCEL)]
    await store.create(trans=mk(g, status=Status.PREPARED, tt=TransType.TCC), branches=first)
    more = [br(g, "02", Op.CONFIRM, b"\x00\xff"), br(g, "02", Op.CANCEL)]
    # wrong status: nothing written
    assert not await store.add_branches(
        gid=g, now=T0 + 1, branches=more, expect_status=Status.SUBMITTED
    )
    assert len(await store.get_branches(gid=g)) == 2
    assert not await store.add_branches(
        gid=gid(), now=T0 + 1, branches=more, expect_status=Status.PREPARED
    )
    assert await store.add_branches(
        gid=g, now=T0 + 1, branches=more, expect_status=Status.PREPARED
    )
    got = await store.get_branches(gid=g)
    assert [(b.key, b.data) for b in got] == [(b.key, b.data) for b in first + more]
    # duplicate (branch_id, op): DuplicateBranch, and the new branch beside it is not kept
    with pytest.raises(DuplicateBranch):
        await store.add_branches(
            gid=g,
            now=T0 + 2,
            branches=[br(g, "03", Op.CONFIRM), br(g, "01", Op.CONFIRM)],
            expect_status=Status.PREPARED,
        )
    assert [b.key for b in await store.get_branches(gid=g)] == [b.key for b in first + more]


async def test_add_branches_keeps_a_workflow_steps_status_data_and_finish_time(
        store: Store) -> None:
    # a workflow records finished steps: the row's own status, bytes and finish_time stay
    g = gid()
    await store.create(trans=mk(g, status=Status.PREPARED, tt=TransType.WORKFLOW), branches=[])
    steps = [replace(br(g, "01", Op.ACTION, b"\x00ok", url=""), status=Status.SUCCEED,
                     finish_time=T0 + 1),
             replace(br(g, "02", Op.ACTION, b"no money", url=""), status=Status.FAILED,
                     finish_time=T0 + 2),
             replace(br(g, "01", Op.ROLLBACK, b"", url=""), status=Status.SUCCEED,
                     finish_time=T0 + 3)]
    for step in steps:
        assert await store.add_branches(gid=g, now=step.finish_time or T0, branches=[step],
                                        expect_status=Status.PREPARED)
    with pytest.raises(DuplicateBranch):
        await store.add_branches(gid=g, now=T0 + 4, branches=[replace(steps[0], data=b"2nd")],
                                 expect_status=Status.PREPARED)
    got = await store.get_branches(gid=g)
    assert [(b.key, b.status, b.data, b.url) for b in got] == [
        (b.key, b.status, b.data, "") for b in steps]
    assert [b.finish_time for b in got] == [approx(b.finish_time) for b in steps]


# ---- claim_due ----------------------------------------------------------------------------
async def test_claim_due_claims_only_due_unfinished(store: Store) -> None:
    due = [
        mk(gid(), status=s, next_cron=T0 - i)
        for i, s in enumerate([Status.PREPARED, Status.SUBMITTED, Status.ABORTING])
    ]
    due.append(mk(gid(), next_cron=T0))  # due exactly now
    later = mk(gid(), next_cron=T0 + 1)
    done = [mk(gid(), status=s, next_cron=T0 - 100) for s in (Status.SUCCEED, Status.FAILED)]
    for t in [*due, later, *done]:
        assert await store.create(trans=t, branches=[])
    claimed = await store.claim_due(now=T0, lease=30, owner="me", limit=10)
    assert {t.gid for t in claimed} == {t.gid for t in due}
    for t in claimed:
        assert t.owner == "me" and t.next_cron_time == approx(T0 + 30)
        stored = await store.get(gid=t.gid)
        assert stored is not None
        assert stored.owner == "me" and stored.next_cron_time == approx(T0 + 30)
    # leased rows are not due again until the lease ends
    soon = await store.claim_due(now=T0 + 1, lease=30, owner="other", limit=10)
    assert [t.gid for t in soon] == [later.gid]
    again = await store.claim_due(now=T0 + 31, lease=30, owner="third", limit=10)
    assert {t.gid for t in again} == {t.gid for t in due} | {later.gid}


async def test_oldest_due_is_the_earliest_due_unfinished(store: Store) -> None:
    assert await store.oldest_due(now=T0) is None
    for t in (mk(gid(), next_cron=T0 - 2), mk(gid(), next_cron=T0 - 5),
              mk(gid(), next_cron=T0 + 1), mk(gid(), status=Status.FAILED, next_cron=T0 - 9)):
        assert await store.create(trans=t, branches=[])
    assert await store.oldest_due(now=T0) == approx(T0 - 5)
    await store.claim_due(now=T0, lease=30, owner="me", limit=10)  # leased: not due
    assert await store.oldest_due(now=T0) is None
    assert await store.oldest_due(now=T0 + 1) == approx(T0 + 1)


async def test_claim_due_respects_limit(store: Store) -> None:
    for i in range(7):
        await store.create(trans=mk(gid(), next_cron=T0 - i), branches=[])
    first = await store.claim_due(now=T0, lease=60, owner="a", limit=3)
    second = await store.claim_due(now=T0, lease=60, owner="b", limit=3)
    third = await store.claim_due(now=T0, lease=60, owner="c", limit=3)
    assert (len(first), len(second), len(third)) == (3, 3, 1)
    assert len({t.gid for t in first + second + third}) == 7
    assert await store.claim_due(now=T0, lease=60, owner="d", limit=3) == []


async def test_concurrent_claimers_never_share_a_gid(store: Store) -> None:
    gids = {gid() for _ in range(24)}
    for g in gids:
        await store.create(trans=mk(g, next_cron=T0 - 1), branches=[])

    async def claimer(owner: str) -> list[str]:
        mine: list[str] = []
        while batch := await store.claim_due(now=T0, lease=60, owner=owner, limit=3):
            mine += [t.gid for t in batch]
        return mine

    results = await asyncio.gather(*(claimer(f"o{i}") for i in range(4)))
    flat = [g for r in results for g in r]
    assert len(flat) == len(set(flat)) == len(gids)
    assert set(flat) == gids
    for owner, mine in zip([f"o{i}" for i in range(4)], results, strict=True):
        for g in mine:
            t = await store.get(gid=g)
            assert t is not None and t.owner == owner


# ---- cron resets --------------------------------------------------------------------------
async def test_reset_next_cron_time(store: Store) -> None:
    g, fin = gid(), gid()
    await store.create(trans=mk(g, next_cron=T0 + 1000), branches=[])
    await store.create(trans=mk(fin, status=Status.SUCCEED, next_cron=T0 + 1000), branches=[])
    assert await store.reset_next_cron_time(gid=g, now=T0)
    got = await store.get(gid=g)
    assert got is not None and got.next_cron_time == approx(T0)
    assert [t.gid for t in await store.claim_due(now=T0, lease=5, owner="x", limit=5)] == [g]
    assert not await store.reset_next_cron_time(gid=fin, now=T0)
    assert not await store.reset_next_cron_time(gid=gid(), now=T0)


async def test_reset_cron_time_counts_and_reports_remaining(store: Store) -> None:
    far = [gid() for _ in range(5)]
    for g in far:
        await store.create(trans=mk(g, next_cron=T0 + 1000), branches=[])
    near = gid()
    await store.create(trans=mk(near, next_cron=T0 + 5), branches=[])
    await store.create(trans=mk(gid(), status=Status.FAILED, next_cron=T0 + 1000), branches=[])
    assert await store.reset_cron_time(now=T0, after=10, limit=3) == (3, True)
    assert await store.reset_cron_time(now=T0, after=10, limit=3) == (2, False)
    assert await store.reset_cron_time(now=T0, after=10, limit=3) == (0, False)
    for g in far:
        t = await store.get(gid=g)
        assert t is not None and t.next_cron_time == approx(T0)
    t = await store.get(gid=near)
    assert t is not None and t.next_cron_time == approx(T0 + 5)


# ---- scan ---------------------------------------------------------------------------------
async def _scan_all(store: Store, limit: int, filters: ScanFilter) -> list[str]:
    out: list[str] = []
    position = ""
    for _ in range(100):
        page, position = await store.scan(position=position, limit=limit, filters=filters)
        assert len(page) <= limit
        out += [t.gid for t in page]
        if position == "":
            return out
    raise AssertionError("scan never ended")


async def test_scan_newest_first_with_filters_and_pagination(store: Store) -> None:
    made: list[Transaction] = []
    kinds = [
        (Status.SUBMITTED, TransType.SAGA),
        (Status.SUCCEED, TransType.SAGA),
        (Status.PREPARED, TransType.TCC),
        (Status.FAILED, TransType.MSG),
        (Status.SUCCEED, TransType.TCC),
    ]
    for i in range(10):
        status, tt = kinds[i % len(kinds)]
        t = mk(f"scan-{i:02d}-" + uuid.uuid4().hex[:6], status=status, tt=tt, now=T0 + i)
        assert await store.create(trans=t, branches=[])
        made.append(t)
    newest_first = [t.gid for t in reversed(made)]
    for limit in (1, 3, 10, 50):
        assert await _scan_all(store, limit, ScanFilter()) == newest_first
    by_status = await _scan_all(store, 2, ScanFilter(status=Status.SUCCEED))
    assert by_status == [t.gid for t in reversed(made) if t.status is Status.SUCCEED]
    by_type = await _scan_all(store, 2, ScanFilter(trans_type=TransType.TCC))
    assert by_type == [t.gid for t in reversed(made) if t.trans_type is TransType.TCC]
    by_time = await _scan_all(
        store, 2, ScanFilter(create_time_start=T0 + 2, create_time_end=T0 + 6)
    )
    assert by_time == [t.gid for t in reversed(made) if T0 + 2 <= t.create_time <= T0 + 6]
    combined = await _scan_all(
        store, 1,
        ScanFilter(status=Status.SUCCEED, trans_type=TransType.SAGA, create_time_start=T0 + 3),
    )
    assert combined == [made[6].gid]
    assert await _scan_all(store, 5, ScanFilter(create_time_start=T0 + 100)) == []


async def test_scan_by_gid_prefix_takes_the_prefix_literally(store: Store) -> None:
    """`%`, `_` and `!` in a prefix are characters, not LIKE patterns or escapes."""
    tag = uuid.uuid4().hex[:6]
    gids = [f"{tag}-a_1", f"{tag}-ab1", f"{tag}-a%2", f"{tag}-a!3", f"{tag}b-a_1", "x" + tag]
    for i, g in enumerate(gids):
        assert await store.create(trans=mk(g, now=T0 + i), branches=[])

    async def by(prefix: str, start: float | None = None) -> list[str]:
        return await _scan_all(store, 1, ScanFilter(gid_prefix=prefix, create_time_start=start))

    assert await by(f"{tag}-") == [gids[3], gids[2], gids[1], gids[0]]
    assert await by(f"{tag}-a_") == [gids[0]]
    assert await by(f"{tag}-a%") == [gids[2]]
    assert await by(f"{tag}-a!") == [gids[3]]
    assert await by(tag) == list(reversed(gids[:5]))
    assert await by(f"{tag}-", start=T0 + 2) == [gids[3], gids[2]]
    assert await by(f"{tag}-zz") == []


# ---- expire_finished ---------------------------------------------------------------------
async def test_expire_finished(store: Store) -> None:
    finished = (Status.SUCCEED, Status.FAILED, Status.SUCCEED)
    old_done = [mk(gid(), status=s, now=T0) for s in finished]
    new_done = mk(gid(), status=Status.SUCCEED, now=T0 + 100)
    old_open = mk(gid(), status=Status.SUBMITTED, now=T0)
    for t in [*old_done, new_done, old_open]:
        await store.create(trans=t, branches=saga_branches(t.gid, 1))
    assert await store.expire_finished(before=T0 + 50, limit=2) == 2
    assert await store.expire_finished(before=T0 + 50, limit=2) == 1
    assert await store.expire_finished(before=T0 + 50, limit=2) == 0
    for t in old_done:
        assert await store.get(gid=t.gid) is None
        assert await store.get_branches(gid=t.gid) == []
    for t in (new_done, old_open):
        assert await store.get(gid=t.gid) is not None
        assert len(await store.get_branches(gid=t.gid)) == 2


# ---- key-value ----------------------------------------------------------------------------
async def test_kv_create_find_update_delete(store: Store) -> None:
    cat, key = "topics", "k-" + uuid.uuid4().hex
    assert await store.kv_find(cat=cat, key=key) is None
    assert await store.kv_create(cat=cat, key=key, value="v1", now=T0)
    assert not await store.kv_create(cat=cat, key=key, value="v2", now=T0 + 1)
    kv = await store.kv_find(cat=cat, key=key)
    assert kv is not None
    assert (kv.cat, kv.k, kv.v, kv.version) == (cat, key, "v1", 1)
    assert kv.create_time == approx(T0) and kv.update_time == approx(T0)
    assert not await store.kv_update(cat=cat, key=key, value="x", expect_version=2, now=T0 + 2)
    assert await store.kv_update(cat=cat, key=key, value="v2", expect_version=1, now=T0 + 2)
    assert not await store.kv_update(cat=cat, key=key, value="v3", expect_version=1, now=T0 + 3)
    kv = await store.kv_find(cat=cat, key=key)
    assert kv is not None
    assert (kv.v, kv.version, kv.update_time) == ("v2", 2, approx(T0 + 2))
    assert kv.create_time == approx(T0)
    assert not await store.kv_update(cat=cat, key="nope", value="x", expect_version=1, now=T0)
    assert await store.kv_find(cat="other", key=key) is None
    assert await store.kv_delete(cat=cat, key=key)
    assert not await store.kv_delete(cat=cat, key=key)
    assert await store.kv_find(cat=cat, key=key) is None


async def test_kv_scan_pagination(store: Store) -> None:
    cat = "c-" + uuid.uuid4().hex[:8]
    keys = [f"k{i}" for i in range(7)]
    for i, k in enumerate(keys):
        assert await store.kv_create(cat=cat, key=k, value=f"v{i}", now=T0 + i)
    await store.kv_create(cat=cat + "x", key="elsewhere", value="-", now=T0)
    seen: list[str] = []
    position = ""
    for _ in range(20):
        page, position = await store.kv_scan(cat=cat, position=position, limit=3)
        assert len(page) <= 3
        assert all(kv.cat == cat for kv in page)
        seen += [kv.k for kv in page]
        if position == "":
            break
    assert seen == list(reversed(keys))  # newest first, like the SQL stores and DTM
    page, position = await store.kv_scan(cat=cat, position="", limit=100)
    assert (len(page), position) == (7, "")


# ---- round trips --------------------------------------------------------------------------
async def test_roundtrips_one_per_create_and_update(store: Store) -> None:
    g = gid()
    before = store.roundtrips
    assert await store.create(trans=mk(g), branches=saga_branches(g, 3))
    assert store.roundtrips == before + 1
    before = store.roundtrips
    assert await store.update(
        gid=g, now=T0 + 1, expect_status=Status.SUBMITTED, expect_owner=None,
        change=Change(status=Status.ABORTING, next_cron_time=T0 + 5, retry_count=1,
                      branches=(BranchUpdate("01", Op.ACTION, Status.FAILED),
                                BranchUpdate("02", Op.ACTION, Status.SUCCEED))),
    )
    assert store.roundtrips == before + 1
    before = store.roundtrips
    assert not await store.update(
        gid=g, now=T0 + 1, expect_status=Status.SUBMITTED, expect_owner=None,
        change=Change(status=Status.SUCCEED, branches=(BranchUpdate("01", Op.ACTION,
                                                                      Status.SUCCEED),)),
    )
    assert store.roundtrips == before + 1
