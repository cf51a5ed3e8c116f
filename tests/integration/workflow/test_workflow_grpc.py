"""DTM's gRPC workflow scenarios, by name: the workflow talks to the server over gRPC, is
resumed over `workflow.Workflow/Execute`, and calls gRPC branches through the interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import orjson
import pytest

from dtmx.client import BranchBarrier, DtmError, Failure, Ongoing
from dtmx.client.workflow import Workflow
from dtmx.client.workflow.grpc import WorkflowInterceptor
from tests.integration.workflow.conftest import WfApp, wait_status
from tests.integration.workflow.ledger import Ledger
from tests.support import xa_busi
from tests.support.busi import BusiServer
from tests.support.grpc_busi import GrpcBusi
from tests.support.proto import busi_pb2, busi_pb2_grpc
from tests.support.server import ServerProcess

REQ = busi_pb2.BusiReq(Amount=30)


@pytest.fixture
async def gbusi() -> AsyncIterator[GrpcBusi]:
    async with GrpcBusi() as b:
        yield b


@pytest.fixture
async def stub(gbusi: GrpcBusi) -> AsyncIterator[busi_pb2_grpc.BusiStub]:
    channel = grpc.aio.insecure_channel(gbusi.target, interceptors=[WorkflowInterceptor()])
    yield busi_pb2_grpc.BusiStub(channel)  # type: ignore[no-untyped-call]
    await channel.close()


def _ops(gbusi: GrpcBusi, method: str) -> list[tuple[str, str]]:
    return [(c.metadata.get("dtm-branch_id", ""), c.metadata.get("dtm-op", ""))
            for c in gbusi.calls_of(method)]


async def test_grpc_simple(
    server: ServerProcess, app: WfApp, gbusi: GrpcBusi, stub: busi_pb2_grpc.BusiStub, gid: str
) -> None:
    gbusi.set_result("TransIn", grpc.StatusCode.ABORTED, message="no such account")

    @app.grpc_workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        req = busi_pb2.BusiReq.FromString(data)
        wf.new_branch()
        reply = await stub.TransOut(req)
        assert reply.Message == "SUCCESS"
        wf.new_branch()
        await stub.TransIn(req)

    with pytest.raises(Failure, match="no such account"):
        await app.grpc_workflows.execute(gid, gid, REQ)
    assert server.status(gid) == "failed"
    assert _ops(gbusi, "TransOut") == [("01", "action")]
    call = gbusi.calls_of("TransIn")[0]
    assert (call.metadata["dtm-gid"], call.metadata["dtm-trans_type"]) == (gid, "workflow")
    assert call.request().Amount == 30


def _saga(app: WfApp, stub: busi_pb2_grpc.BusiStub, gid: str, steps: list[int],
          ongoing_at: set[int] | None = None, **opts: bool) -> None:
    """DTM's GrpcRollback(Resume) workflow; `ongoing_at` are the points (0-4) that answer
    Ongoing once, each on its own run."""
    hits = ongoing_at or set()

    def ongoing(point: int) -> None:
        if point in hits:
            hits.discard(point)
            steps.append(point)
            raise Ongoing(f"ongoing at {point}")

    @app.grpc_workflows.register(gid, **opts)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        req = busi_pb2.BusiReq.FromString(data)
        ongoing(0)

        async def revert_out(bb: BranchBarrier) -> None:
            ongoing(4)
            await stub.TransOutRevert(req)

        wf.new_branch().on_rollback(revert_out)
        await stub.TransOut(req)
        ongoing(1)

        async def revert_in(bb: BranchBarrier) -> None:
            ongoing(3)
            await stub.TransInRevert(req)

        wf.new_branch().on_rollback(revert_in)
        try:
            await stub.TransIn(req)
        finally:
            ongoing(2)


async def test_grpc_rollback(
    server: ServerProcess, app: WfApp, gbusi: GrpcBusi, stub: busi_pb2_grpc.BusiStub, gid: str
) -> None:
    gbusi.set_result("TransIn", grpc.StatusCode.ABORTED)
    _saga(app, stub, gid, [])
    with pytest.raises(Failure):
        await app.grpc_workflows.execute(gid, gid, REQ)
    assert server.status(gid) == "failed"
    assert _ops(gbusi, "TransOutRevert") == [("01", "rollback")]
    assert gbusi.calls_of("TransInRevert") == []


async def test_grpc_rollback_resume(
    server: ServerProcess, app: WfApp, gbusi: GrpcBusi, stub: busi_pb2_grpc.BusiStub, gid: str
) -> None:
    gbusi.set_result("TransIn", grpc.StatusCode.ABORTED)
    steps: list[int] = []
    _saga(app, stub, gid, steps, {0, 1, 2, 3, 4}, compensate_error_branch=True)
    with pytest.raises(Ongoing):
        await app.grpc_workflows.execute(gid, gid, REQ)
    assert server.status(gid) == "prepared"
    await wait_status(server, gid, "failed")
    assert steps == [0, 1, 2, 3, 4]  # one resume per Ongoing, in order
    # each branch ran once, though the workflow function ran six times
    assert _ops(gbusi, "TransOut") == [("01", "action")]
    assert _ops(gbusi, "TransIn") == [("02", "action")]
    assert _ops(gbusi, "TransInRevert") == [("02", "rollback")]  # compensate_error_branch
    assert _ops(gbusi, "TransOutRevert") == [("01", "rollback")]


async def test_mixed(
    server: ServerProcess, app: WfApp, gbusi: GrpcBusi, stub: busi_pb2_grpc.BusiStub,
    busi: BusiServer, gid: str, tmp_path: Path,
) -> None:
    ledger = await Ledger(tmp_path / "bank.db").setup()
    xa_busi.setup_tables()
    app.workflows.barrier_table = xa_busi.BARRIER  # the XA step's (the ledger has its own)

    @app.workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        req = busi_pb2.BusiReq.FromString(data)

        async def revert(bb: BranchBarrier) -> None:
            await stub.TransOutRevert(req)

        await wf.new_branch().on_rollback(revert).do(
            lambda bb: ledger.adjust(bb, 1, -req.Amount)
        )
        half = orjson.dumps({"amount": req.Amount // 2})
        await wf.new_branch().tcc(
            f"{busi.url}/TransInTry", f"{busi.url}/TransInConfirm", f"{busi.url}/TransInCancel",
            half,
        )
        reply = await wf.new_branch().grpc(gbusi.url("TransIn"), req, busi_pb2.BusiReply)
        assert reply.Message == "SUCCESS"
        await wf.new_branch().xa(xa_busi._pg, lambda conn: conn.execute(
            f"INSERT INTO {xa_busi.BUSI} VALUES ($1, 'mixed', $2)", gid, req.Amount // 2))

    await app.workflows.execute(gid, gid, REQ.SerializeToString())
    assert server.status(gid) == "succeed"
    assert await ledger.balances() == (70, 100)
    assert busi.state.applied_count("TransInConfirm", gid) == 1
    assert busi.state.bodies[("TransInConfirm", gid)] == b'{"amount":15}'
    assert _ops(gbusi, "TransIn") == [("03", "action")]
    assert gbusi.calls_of("TransOutRevert") == []
    assert xa_busi.busi_rows("pg", gid) == [("mixed", 15)]
    assert xa_busi.prepared_xids("pg", gid) == []


async def test_grpc_error(
    server: ServerProcess, app: WfApp, gbusi: GrpcBusi, stub: busi_pb2_grpc.BusiStub, gid: str
) -> None:
    gbusi.set_result("TransOut", grpc.StatusCode.INTERNAL, grpc.StatusCode.OK)

    @app.grpc_workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        req = busi_pb2.BusiReq.FromString(data)
        wf.new_branch()
        await stub.TransOut(req)
        wf.new_branch()
        await stub.TransIn(req)

    with pytest.raises(DtmError) as e:
        await app.grpc_workflows.execute(gid, gid, REQ)
    assert e.value.grpc_code == "INTERNAL"
    await wait_status(server, gid, "succeed")
    assert _ops(gbusi, "TransOut") == [("01", "action")] * 2
    assert _ops(gbusi, "TransIn") == [("02", "action")]


async def test_interceptor_outside_saga(gbusi: GrpcBusi, stub: busi_pb2_grpc.BusiStub) -> None:
    reply = await stub.TransOut(REQ)
    assert reply.Message == "SUCCESS"
    assert "dtm-gid" not in gbusi.calls_of("TransOut")[0].metadata


async def test_interceptor_inside_a_workflow_needs_a_branch(
    app: WfApp, gbusi: GrpcBusi, stub: busi_pb2_grpc.BusiStub, gid: str
) -> None:
    @app.grpc_workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        await stub.TransOut(REQ)  # no wf.new_branch(): it could not be replayed

    with pytest.raises(DtmError, match=r"before any wf\.new_branch"):
        await app.grpc_workflows.execute(gid, gid, REQ)
    assert gbusi.calls_of("TransOut") == []
