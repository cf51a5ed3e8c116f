"""DTM's HTTP workflow scenarios, by name, against a real server on every store."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from dtmx.client import BranchBarrier, DtmError, Failure, Ongoing
from dtmx.client.workflow import Workflow
from tests.integration.workflow.conftest import WfApp, wait_status
from tests.integration.workflow.ledger import Ledger
from tests.support.busi import BusiServer
from tests.support.server import ServerProcess

REQ = orjson.dumps({"amount": 30})


async def test_normal(server: ServerProcess, app: WfApp, busi: BusiServer, gid: str) -> None:
    finished: list[bool] = []

    @app.workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        wf.new_branch().on_finish(lambda bb, is_rollback: finished.append(is_rollback))
        await wf.new_branch().post(f"{busi.url}/TransOut", data)
        await wf.new_branch().post(f"{busi.url}/TransIn", data)

    assert await app.workflows.execute(gid, gid, REQ) == b""
    assert server.status(gid) == "succeed"
    assert finished == [False]
    st = busi.state
    assert st.applied_count("TransOut", gid) == st.applied_count("TransIn", gid) == 1
    # each HTTP step carried the workflow's branch parameters (for the branch's barrier)
    q = next(r[2] for r in st.requests if r[0] == "TransIn" and r[2]["gid"] == gid)
    assert (q["trans_type"], q["branch_id"], q["op"]) == ("workflow", "03", "action")
    assert st.bodies[("TransIn", gid)] == REQ


async def test_rollback(
    server: ServerProcess, app: WfApp, busi: BusiServer, gid: str, tmp_path: Path
) -> None:
    ledger = await Ledger(tmp_path / "bank.db").setup()
    busi.state.set("TransIn", "FAILURE")

    @app.workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        wf.new_branch().on_finish(lambda bb, is_rollback: None)
        amount = orjson.loads(data)["amount"]

        async def refund(bb: BranchBarrier) -> None:
            await wf.request("POST", f"{busi.url}/TransOutRevert", data=data)
            await ledger.adjust(bb, 1, amount)

        await wf.new_branch().on_rollback(refund).do(lambda bb: ledger.adjust(bb, 1, -amount))

        async def undo_in(bb: BranchBarrier) -> None:
            await ledger.adjust(bb, 2, -amount)

        await wf.new_branch().on_rollback(undo_in).post(f"{busi.url}/TransIn", data)

    with pytest.raises(Failure, match="refused"):
        await app.workflows.execute(gid, gid, REQ)
    assert server.status(gid) == "failed"
    assert await ledger.balances() == (100, 100)
    # the failed TransIn branch is not rolled back (DTM's CompensateErrorBranch=false)
    assert ("03", "rollback") not in await ledger.barrier_rows(gid)
    assert busi.state.count("TransOutRevert", gid) == 1
    assert server.query(gid)["transaction"]["rollback_reason"].endswith("refused")


def _tcc(app: WfApp, busi: BusiServer, gid: str) -> None:
    @app.workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        for side in ("TransOut", "TransIn"):
            await wf.new_branch().tcc(
                f"{busi.url}/{side}Try", f"{busi.url}/{side}Confirm",
                f"{busi.url}/{side}Cancel", data,
            )


async def test_tcc(server: ServerProcess, app: WfApp, busi: BusiServer, gid: str) -> None:
    _tcc(app, busi, gid)
    await app.workflows.execute(gid, gid, REQ)
    assert server.status(gid) == "succeed"
    st = busi.state
    assert [st.applied_count(r, gid) for r in ("TransOutConfirm", "TransInConfirm")] == [1, 1]
    assert st.count("TransOutCancel", gid) + st.count("TransInCancel", gid) == 0
    assert st.bodies[("TransInConfirm", gid)] == REQ
    ops = {(b["branch_id"], b["op"]) for b in server.query(gid)["branches"]}
    assert {("01", "action"), ("02", "action"), ("01", "commit"), ("02", "commit")} <= ops


async def test_tcc_rollback(server: ServerProcess, app: WfApp, busi: BusiServer, gid: str) -> None:
    busi.state.set("TransInTry", "FAILURE")
    _tcc(app, busi, gid)
    with pytest.raises(Failure):
        await app.workflows.execute(gid, gid, REQ)
    assert server.status(gid) == "failed"
    st = busi.state
    assert st.applied_count("TransOutCancel", gid) == 1
    assert st.count("TransInCancel", gid) == 0  # its own try failed: not cancelled
    assert st.count("TransOutConfirm", gid) == 0


async def test_error_resumed_by_cron(
    server: ServerProcess, app: WfApp, busi: BusiServer, gid: str
) -> None:
    busi.state.set("TransOut", "ERROR", "SUCCESS")

    @app.workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        await wf.new_branch().post(f"{busi.url}/TransOut", data)

    with pytest.raises(DtmError) as e:
        await app.workflows.execute(gid, gid, REQ)
    assert not isinstance(e.value, Failure | Ongoing)
    assert server.status(gid) == "prepared"
    await wait_status(server, gid, "succeed")
    assert busi.state.count("TransOut", gid) == 2
    assert busi.state.applied_count("TransOut", gid) == 1


async def test_ongoing(server: ServerProcess, app: WfApp, busi: BusiServer, gid: str) -> None:
    busi.state.set("TransOut", "ONGOING", "SUCCESS")

    @app.workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        await wf.new_branch().post(f"{busi.url}/TransOut", data)

    with pytest.raises(Ongoing):
        await app.workflows.execute(gid, gid, REQ)
    await wait_status(server, gid, "succeed")
    assert busi.state.applied_count("TransOut", gid) == 1


async def test_resume_skip(server: ServerProcess, app: WfApp, busi: BusiServer, gid: str) -> None:
    busi.state.set("TransOut", "ONGOING", "SUCCESS")
    counter: list[int] = []

    @app.workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        await wf.new_branch().do(lambda bb: counter.append(1))
        await wf.new_branch().post(f"{busi.url}/TransOut", data)

    with pytest.raises(Ongoing):
        await app.workflows.execute(gid, gid, REQ)
    await wait_status(server, gid, "succeed")
    assert counter == [1]  # the recorded local step was not run again on resume


async def test_ret(server: ServerProcess, app: WfApp, busi: BusiServer, gid: str) -> None:
    runs: list[int] = []

    @app.workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> bytes:
        runs.append(1)
        await wf.new_branch().post(f"{busi.url}/TransOut", data)
        return b"result of workflow"

    assert await app.workflows.execute(gid, gid, REQ) == b"result of workflow"
    assert server.status(gid) == "succeed"
    # a second execute answers the recorded result without running the function
    assert await app.workflows.execute(gid, gid, REQ) == b"result of workflow"
    assert runs == [1]


async def test_branch_conflict(server: ServerProcess, app: WfApp, gid: str) -> None:
    @app.workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        await wf.new_branch().do(lambda bb: b"first")
        # a second record of (gid, 01, action) is refused and the first one kept
        body = {"gid": gid, "trans_type": "workflow", "branch_id": "01", "op": "action",
                "status": "succeed", "data": "second"}
        with pytest.raises(DtmError):
            await app.client.transport.register_branch(body)
        raise Ongoing("stop here")

    with pytest.raises(Ongoing):
        await app.workflows.execute(gid, gid, REQ)
    rows = [b for b in server.query(gid)["branches"] if b["branch_id"] == "01"]
    assert len(rows) == 1


async def test_simple_resume(server: ServerProcess, app: WfApp, busi: BusiServer, gid: str) -> None:
    runs: list[int] = []

    @app.workflows.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise Ongoing("not yet")
        await wf.new_branch().post(f"{busi.url}/TransOut", data)

    with pytest.raises(Ongoing):
        await app.workflows.execute(gid, gid, REQ)
    await wait_status(server, gid, "succeed")
    assert busi.state.applied_count("TransOut", gid) == 1
    assert len(runs) == 2
