"""The embedded engine in this test's own loop, on SQLite, PostgreSQL and Redis: local
branches alone and mixed with HTTP and gRPC ones, in sagas, TCCs and msgs; rollback,
retries, and a process without a transaction's functions handing it back unharmed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from dtmx.client import DtmClient, Status
from dtmx.embedded import (
    Embedded,
    Failure,
    Functions,
    LocalBranch,
    Ongoing,
    SagaFlow,
    TransactionFailed,
)
from dtmx.store_settings import StoreSettings
from tests.support.busi import BusiServer
from tests.support.grpc_busi import GrpcBusi
from tests.support.proto import busi_pb2
from tests.support.util import aeventually, free_port

FAST: dict[str, Any] = {"poll_interval": 0.05, "retry_interval": 0.05, "lease": 2.0,
                        "request_timeout": 1.0, "timeout_to_fail": 1.0,
                        "heartbeat_interval": 1.0, "pool_size": 4}


class Record:
    """What the local functions were called with, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []

    def of(self, gid: str) -> list[str]:
        return [f"{name}:{op}" for name, g, _, op in self.calls if g == gid]


@pytest.fixture
def rec() -> Record:
    return Record()


@pytest.fixture
def fns(rec: Record) -> Functions:
    """A fresh registry: out1/in1 transfer, their compensations, and a TCC trio."""
    f = Functions()

    def plain(name: str) -> None:
        async def fn(b: LocalBranch) -> None:
            rec.calls.append((name, b.gid, b.branch_id, b.op))
            data = b.json() if b.payload.startswith(b"{") else {}
            if data.get("fail") == name:
                raise Failure(f"{name} refused")

        f.add(fn, name)

    for n in ("out", "out_revert", "in", "in_revert", "try", "confirm", "cancel", "qp"):
        plain(n)
    return f


@pytest.fixture
async def dtm(store: StoreSettings, fns: Functions) -> AsyncIterator[Embedded]:
    async with Embedded(store, functions=fns, **FAST) as e:
        yield e


async def status(client: DtmClient, gid: str) -> Status | None:
    state = await client.query(gid)
    return state.status if state else None


async def finished(client: DtmClient, gid: str, want: Status) -> None:
    async def check() -> bool:
        return await status(client, gid) == want
    await aeventually(check, timeout=10)


async def test_local_saga_succeeds_and_rolls_back(dtm: Embedded, rec: Record) -> None:
    c = dtm.client
    gid = await c.new_gid()
    s = c.saga(gid).add("local://out", "local://out_revert", {"amount": 30})
    s.add("local://in", "local://in_revert", {"amount": 30})
    s.wait_result = True
    await s.submit()
    assert await status(c, gid) is Status.SUCCEED
    assert rec.of(gid) == ["out:action", "in:action"]

    gid = await c.new_gid()
    s = c.saga(gid).add("local://out", "local://out_revert", {"fail": "in"})
    s.add("local://in", "local://in_revert", {"fail": "in"})
    s.wait_result = True
    with pytest.raises(TransactionFailed, match="in refused"):
        await s.submit()
    assert await status(c, gid) is Status.FAILED
    # DTM's rule: a failed action's compensation runs too (its branch may have half-acted)
    assert rec.of(gid) == ["out:action", "in:action", "in_revert:compensate",
                           "out_revert:compensate"]


async def test_errors_and_ongoing_are_retried(store: StoreSettings) -> None:
    fns = Functions()
    answers: list[BaseException | None] = [RuntimeError("db down"), Ongoing(), None]
    seen: list[str] = []

    @fns.local("flaky")
    async def flaky(b: LocalBranch) -> None:
        seen.append(b.op)
        err = answers.pop(0)
        if err is not None:
            raise err

    async with Embedded(store, functions=fns, **FAST) as dtm:
        gid = await dtm.client.new_gid()
        await dtm.client.saga(gid).add(flaky.url, "", None).submit()
        await finished(dtm.client, gid, Status.SUCCEED)
        assert seen == ["action"] * 3


async def test_saga_flow_decorators(dtm: Embedded, fns: Functions, rec: Record) -> None:
    flow = SagaFlow("transfer", functions=fns)

    async def refund(b: LocalBranch) -> None:
        rec.calls.append(("refund", b.gid, b.branch_id, b.op))

    @flow.step(compensate=refund)
    async def debit(b: LocalBranch) -> None:
        rec.calls.append(("debit", b.gid, b.branch_id, b.op))

    @flow.step()
    async def credit(b: LocalBranch) -> None:
        if b.json()["amount"] > 100:
            raise Failure("limit")

    assert debit.url == "local://transfer.debit" and "transfer.refund" in fns
    gid = await flow.run(dtm.client, {"amount": 30})
    assert rec.of(gid) == ["debit:action"]
    with pytest.raises(TransactionFailed):
        await flow.run(dtm.client, {"amount": 300})


async def test_local_and_http_in_one_saga_and_tcc(dtm: Embedded, rec: Record) -> None:
    c = dtm.client
    with BusiServer(free_port()) as busi:
        gid = await c.new_gid()
        s = c.saga(gid).add("local://out", "local://out_revert", {"amount": 30})
        s.add(f"{busi.url}/TransIn", f"{busi.url}/TransInRevert", {"amount": 30})
        s.wait_result = True
        await s.submit()
        assert busi.state.applied_count("TransIn", gid) == 1

        busi.state.set("TransIn", "FAILURE")
        gid = await c.new_gid()
        s = c.saga(gid).add("local://out", "local://out_revert", {"amount": 30})
        s.add(f"{busi.url}/TransIn", f"{busi.url}/TransInRevert", {"amount": 30})
        await s.submit()
        await finished(c, gid, Status.FAILED)
        assert rec.of(gid) == ["out:action", "out_revert:compensate"]

        gid = await c.new_gid()
        async with c.tcc(gid) as tcc:
            await tcc.call_branch({"a": 1}, "local://try", "local://confirm", "local://cancel")
            await tcc.call_branch({"a": 1}, f"{busi.url}/TransInTry",
                                  f"{busi.url}/TransInConfirm", f"{busi.url}/TransInCancel")
        await finished(c, gid, Status.SUCCEED)
        assert rec.of(gid) == ["try:try", "confirm:confirm"]
        assert busi.state.applied_count("TransInConfirm", gid) == 1

        busi.state.set("TransInTry", "FAILURE")
        gid = await c.new_gid()
        with pytest.raises(Failure):
            async with c.tcc(gid) as tcc:
                await tcc.call_branch({}, "local://try", "local://confirm", "local://cancel")
                await tcc.call_branch({}, f"{busi.url}/TransInTry",
                                      f"{busi.url}/TransInConfirm", f"{busi.url}/TransInCancel")
        await finished(c, gid, Status.FAILED)
        assert rec.of(gid) == ["try:try", "cancel:cancel"]


async def test_local_and_grpc_in_one_saga_and_tcc(dtm: Embedded, rec: Record) -> None:
    c = dtm.client
    payload = busi_pb2.BusiReq(Amount=30, UserID=1).SerializeToString()
    async with GrpcBusi() as g:
        gid = await c.new_gid()
        s = c.saga(gid).add("local://out", "local://out_revert", payload)
        s.add(g.url("TransIn"), g.url("TransInRevert"), payload)
        s.wait_result = True
        await s.submit()
        assert [x.metadata["dtm-gid"] for x in g.calls_of("TransIn")] == [gid]

        g.set_result("TransIn", grpc.StatusCode.ABORTED, message="no")
        gid = await c.new_gid()
        s = c.saga(gid).add("local://out", "local://out_revert", payload)
        s.add(g.url("TransIn"), g.url("TransInRevert"), payload)
        await s.submit()
        await finished(c, gid, Status.FAILED)
        assert rec.of(gid) == ["out:action", "out_revert:compensate"]

        gid = await c.new_gid()
        async with c.tcc(gid) as tcc:
            await tcc.call_branch(payload, "local://try", "local://confirm", "local://cancel")
            await tcc.call_branch(payload, g.url("TransInTry"), g.url("TransInConfirm"),
                                  g.url("TransInCancel"))
        await finished(c, gid, Status.SUCCEED)
        assert rec.of(gid) == ["try:try", "confirm:confirm"]
        assert [x.metadata["dtm-gid"] for x in g.calls_of("TransInConfirm")] == [gid]


async def test_local_msg_with_local_query_prepared(dtm: Embedded, rec: Record) -> None:
    c = dtm.client
    gid = await c.new_gid()
    m = c.msg(gid).add("local://in", {"amount": 1})
    m.query_prepared = "local://qp"
    await m.prepare(m.query_prepared)
    await finished(c, gid, Status.SUCCEED)  # timed out as prepared: query_prepared said yes
    assert rec.of(gid) == ["qp:msg", "in:action"]


async def test_unknown_local_function_is_handed_back_not_failed(
        store: StoreSettings, fns: Functions, rec: Record) -> None:
    """A process without the function (here: an empty registry) leaves the transaction
    alone, however often it claims it; a process that has it adopts and finishes it while
    the other still runs (on Redis: whichever holds the transaction's partition)."""
    async with Embedded(store, functions=Functions(), **FAST) as without:
        gid = await without.client.new_gid()
        await without.client.saga(gid).add("local://out", "local://out_revert", {}).submit()
        for _ in range(3):  # several polls of the process that cannot run it
            await without.engine.store.reset_next_cron_time(gid=gid, now=without.clock.now())
            await aeventually(lambda: _not_due(without, gid), timeout=5)
        assert await status(without.client, gid) is Status.SUBMITTED
        assert rec.of(gid) == []
        waiting = await without.engine.store.kv_find(cat="dtmx_local_waiting", key=gid)
        assert waiting is not None and waiting.v == "out out_revert"
        async with Embedded(store, functions=fns, **FAST) as with_fn:
            await finished(with_fn.client, gid, Status.SUCCEED)
            assert rec.of(gid) == ["out:action"]

            async def row_gone() -> bool:  # deleted by the adoption, or by the next scan
                store = with_fn.engine.store  # when its poller ran it first
                return await store.kv_find(cat="dtmx_local_waiting", key=gid) is None
            await aeventually(row_gone, timeout=5)


async def _not_due(e: Embedded, gid: str) -> bool:
    t = await e.engine.store.get(gid=gid)
    assert t is not None
    return t.next_cron_time > e.clock.now() + 0.01


async def test_workflow_sdk_over_the_embedded_engine(dtm: Embedded) -> None:
    """The workflow SDK runs on `Embedded`; the engine resumes an unfinished workflow
    through its local callback (no endpoint served)."""
    wfs = dtm.workflows()
    ran: list[str] = []
    attempts = [0]

    async def step(bb: object) -> bytes:
        ran.append("step")
        return b"stepped"

    @wfs.register("embedded-wf")
    async def flow(wf: Any, data: bytes) -> bytes:
        await wf.new_branch().do(step)
        attempts[0] += 1
        if attempts[0] == 1:
            raise Ongoing("come back later")
        return b"done:" + data

    gid = await dtm.client.new_gid()
    with pytest.raises(Ongoing):
        await wfs.execute("embedded-wf", gid, b"in")
    await finished(dtm.client, gid, Status.SUCCEED)  # resumed by the engine, locally
    assert ran == ["step"] and attempts[0] == 2  # the recorded step was replayed, not re-run


async def test_a_long_failure_message_is_capped_in_the_reason(store: StoreSettings) -> None:
    fns = Functions()

    @fns.local("refuse")
    async def refuse(b: LocalBranch) -> None:
        raise Failure("x" * 20_000)

    async with Embedded(store, functions=fns, **FAST) as dtm:
        gid = await dtm.client.new_gid()
        s = dtm.client.saga(gid).add(refuse.url, "", None)
        s.wait_result = True
        with pytest.raises(TransactionFailed):
            await s.submit()
        state = await dtm.client.query(gid)
        assert state is not None and state.status is Status.FAILED
        reason = state.raw["transaction"]["rollback_reason"]
        assert "xxx" in reason and len(reason) < 1000
        # the call history keeps the call, its reason cut to Limits.MaxCallReasonBytes
        calls = state.raw["calls"]
        assert [(c["branch_id"], c["op"], c["result"]) for c in calls] == [
            ("01", "action", "FAILURE")]
        assert "xxx" in calls[0]["reason"]
        assert len(calls[0]["reason"].encode()) <= 512 + len("...(truncated)")
