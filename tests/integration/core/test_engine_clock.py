"""The engine and poller in-process, on a real SQLite store and a real branch service, with
an injected clock: DTM's default intervals (35 s timeout, 10 s retry) are used as they are and
the test moves the clock instead of waiting."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dtmx.clock import GidFactory
from dtmx.core.models import Change, Op, Status, TransType
from dtmx.core.request import TransRequest, parse_registration
from dtmx.core.timing import Timing
from dtmx.engine import Engine
from dtmx.invoke.base import BranchCall, CallResult
from dtmx.invoke.http_invoker import HttpInvoker
from dtmx.poller import Poller
from dtmx.service import Service
from dtmx.stores.sql import SqlStore
from dtmx.stores.sql.sqlite import SqliteStore
from tests.support.busi import BusiServer
from tests.support.clock import FakeClock
from tests.support.util import aeventually, free_port


@pytest.fixture
def busi() -> Iterator[BusiServer]:
    b = BusiServer(free_port()).start()
    yield b
    b.stop()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Service, Poller, FakeClock]]:
    clock = FakeClock()
    store = SqliteStore(str(tmp_path / "e.db"))
    await store.open()
    invoker = HttpInvoker()
    engine = Engine(store=store, invoker=invoker, clock=clock, timing=Timing())
    svc = Service(engine=engine, new_gid=GidFactory(clock))
    poller = Poller(svc.engine, interval=3)
    yield svc, poller, clock
    await poller.stop()
    await svc.close()
    await invoker.close()
    await store.close()


def saga(gid: str, busi: BusiServer) -> TransRequest:
    return TransRequest(gid=gid, trans_type=TransType.SAGA, payloads=[b"{}", b"{}"], steps=[
        {"action": f"{busi.url}/TransOut", "compensate": f"{busi.url}/TransOutRevert"},
        {"action": f"{busi.url}/TransIn", "compensate": f"{busi.url}/TransInRevert"}])


async def settle(svc: Service) -> None:
    """Wait for background runs started by the service (not for the clock)."""
    await aeventually(lambda: _idle(svc), timeout=10)


async def _idle(svc: Service) -> bool:
    return svc.engine.runs_in_flight == 0


async def test_backoff_schedule_then_recovery(world: tuple[Service, Poller, FakeClock],
                                              busi: BusiServer) -> None:
    svc, poller, clock = world
    busi.state.set("TransIn", "ERROR", "ERROR", "SUCCESS")
    t0 = clock.now()
    await svc.submit(saga("g1", busi))
    await settle(svc)
    t = await svc.store.get(gid="g1")
    assert t is not None and t.status is Status.SUBMITTED
    assert t.next_cron_interval == 20 and t.next_cron_time == t0 + 20  # 10 s doubled
    clock.advance(19.9)
    assert await poller.poll_once() == 0  # not due yet
    clock.advance(0.1)
    assert await poller.poll_once() == 1
    await aeventually(lambda: _interval(svc, "g1", 40), timeout=10)
    clock.advance(40)
    assert await poller.poll_once() == 1

    async def done() -> bool:
        t = await svc.store.get(gid="g1")
        return t is not None and t.status is Status.SUCCEED
    await aeventually(done, timeout=10)
    assert busi.state.count("TransIn", "g1") == 3
    assert busi.state.applied_count("TransOut", "g1") == 1


async def _interval(svc: Service, gid: str, value: float) -> bool:
    t = await svc.store.get(gid=gid)
    return t is not None and t.next_cron_interval == value


async def test_tcc_prepared_is_cancelled_after_35_seconds(world: tuple[Service, Poller, FakeClock],
                                                          busi: BusiServer) -> None:
    svc, poller, clock = world
    await svc.prepare(TransRequest(gid="t1", trans_type=TransType.TCC))
    await svc.register_branch(parse_registration({
        "gid": "t1", "branch_id": "01", "trans_type": "tcc",
        "confirm": f"{busi.url}/TransOutConfirm", "cancel": f"{busi.url}/TransOutCancel"}))
    clock.advance(34.9)
    assert await poller.poll_once() == 0
    clock.advance(0.1)
    assert await poller.poll_once() == 1

    async def failed() -> bool:
        t = await svc.store.get(gid="t1")
        return t is not None and t.status is Status.FAILED
    await aeventually(failed, timeout=10)
    t = await svc.store.get(gid="t1")
    assert t is not None and t.rollback_reason == "Timeout after 35 seconds"
    assert busi.state.count("TransOutCancel", "t1") == 1


async def test_lease_protects_then_expires(world: tuple[Service, Poller, FakeClock],
                                          busi: BusiServer) -> None:
    svc, poller, clock = world
    busi.state.set("TransOut", "SLEEP:0.5")
    await svc.submit(saga("l1", busi))
    # the submitting run holds the lease (30 s): the poller may not claim it meanwhile
    clock.advance(29)
    assert await poller.poll_once() == 0
    # a run that outlives its lease (a hung process) loses the transaction to another owner
    clock.advance(2)
    assert await poller.poll_once() == 1

    async def done() -> bool:
        t = await svc.store.get(gid="l1")
        return t is not None and t.status is Status.SUCCEED
    await aeventually(done, timeout=10)
    await settle(svc)
    # both runs called TransOut, the stale one's writes were refused, the effect applied once
    assert busi.state.count("TransOut", "l1") == 2
    assert busi.state.applied_count("TransOut", "l1") == 1
    assert busi.state.applied_count("TransIn", "l1") == 1


class _SlowCalls:
    """An invoker whose every branch call takes `seconds` of the injected clock."""

    def __init__(self, inner: HttpInvoker, clock: FakeClock, seconds: float) -> None:
        self.inner, self.clock, self.seconds = inner, clock, seconds

    async def call(self, call: BranchCall) -> CallResult:
        self.clock.advance(self.seconds)
        return await self.inner.call(call)

    async def close(self) -> None:
        await self.inner.close()


class _RecordingStore:
    """The real store, with the changes the engine writes recorded."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.changes: list[Change] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def update(self, **kw: Any) -> bool:
        self.changes.append(kw["change"])
        return await self.store.update(**kw)


async def test_claim_is_extended_only_when_half_the_lease_is_gone(
    tmp_path: Path, busi: BusiServer
) -> None:
    """Default lease 30 s; each branch call takes 10 s of the clock. After step 1 (20 s
    left) the results are written without touching next_cron_time; after step 2 (10 s
    left) the claim is extended to now + 30 before step 3 is called."""
    clock = FakeClock()
    store = SqliteStore(str(tmp_path / "x.db"))
    await store.open()
    recording = _RecordingStore(store)
    invoker = _SlowCalls(HttpInvoker(), clock, 10)
    engine = Engine(store=recording, invoker=invoker, clock=clock,  # type: ignore[arg-type]
                    timing=Timing())
    svc = Service(engine=engine, new_gid=GidFactory(clock))
    try:
        t0 = clock.now()
        step = {"action": f"{busi.url}/TransIn", "compensate": f"{busi.url}/TransInRevert"}
        await svc.submit(TransRequest(gid="x1", trans_type=TransType.SAGA,
                                      payloads=[b"{}"] * 3, steps=[step] * 3))
        await settle(svc)
        t = await store.get(gid="x1")
        assert t is not None and t.status is Status.SUCCEED
        after_1, after_2, final = recording.changes
        assert after_1.next_cron_time is None and len(after_1.branches) == 1
        assert after_2.next_cron_time == t0 + 20 + 30 and len(after_2.branches) == 1
        assert final.status is Status.SUCCEED and len(final.branches) == 1
    finally:
        await svc.close()
        await invoker.close()
        await store.close()


async def test_decided_calls_write_their_results_with_the_final_status(
    tmp_path: Path, busi: BusiServer
) -> None:
    """A TCC's confirms cannot change its outcome: both confirm results go in the one final
    write. A plain sequential saga's first success rides on the write of the second action's
    FAILURE (the aborting transition: one atomic write, before any compensation); one with a
    timeout_to_fail (which a timeout could abort) writes the first action's result before
    the second action is called. Compensations ride on the final write."""
    clock = FakeClock()
    store = SqliteStore(str(tmp_path / "d.db"))
    await store.open()
    recording = _RecordingStore(store)
    invoker = HttpInvoker()
    engine = Engine(store=recording, invoker=invoker, clock=clock,  # type: ignore[arg-type]
                    timing=Timing())
    svc = Service(engine=engine, new_gid=GidFactory(clock))
    try:
        await svc.prepare(TransRequest(gid="t1", trans_type=TransType.TCC))
        for bid, name in (("01", "TransOut"), ("02", "TransIn")):
            await svc.register_branch(parse_registration({
                "gid": "t1", "trans_type": "tcc", "branch_id": bid, "data": "{}",
                "confirm": f"{busi.url}/{name}Confirm", "cancel": f"{busi.url}/{name}Cancel"}))
        await svc.submit(TransRequest(gid="t1", trans_type=TransType.TCC))
        await settle(svc)
        [final] = recording.changes
        assert final.status is Status.SUCCEED
        assert {(b.branch_id, b.op, b.status) for b in final.branches} == {
            ("01", Op.CONFIRM, Status.SUCCEED), ("02", Op.CONFIRM, Status.SUCCEED)}
        # the confirms ran in reverse registration order, as DTM does
        called = [route for route, _, q in busi.state.requests if q.get("gid") == "t1"]
        assert called == ["TransInConfirm", "TransOutConfirm"]

        recording.changes.clear()
        busi.state.set("TransIn", "FAILURE")
        await svc.submit(saga("s1", busi))
        await settle(svc)
        aborting, final = recording.changes
        assert aborting.status is Status.ABORTING
        assert [(b.branch_id, b.op, b.status) for b in aborting.branches] == [
            ("01", Op.ACTION, Status.SUCCEED), ("02", Op.ACTION, Status.FAILED)]
        assert final.status is Status.FAILED
        assert {(b.branch_id, b.op) for b in final.branches} == {
            ("01", Op.COMPENSATE), ("02", Op.COMPENSATE)}

        recording.changes.clear()
        timed = saga("s2", busi)
        timed.options = replace(timed.options, timeout_to_fail=60)
        await svc.submit(timed)
        await settle(svc)
        after_out, aborting, final = recording.changes
        assert [(b.branch_id, b.op) for b in after_out.branches] == [("01", Op.ACTION)]
        assert aborting.status is Status.ABORTING
        assert [(b.branch_id, b.op) for b in aborting.branches] == [("02", Op.ACTION)]
        assert final.status is Status.FAILED
        assert {(b.branch_id, b.op) for b in final.branches} == {
            ("01", Op.COMPENSATE), ("02", Op.COMPENSATE)}
    finally:
        await svc.close()
        await invoker.close()
        await store.close()
