"""kill -9 of the workflow's own process mid-run: the server resumes the workflow in the
restarted process and the replay finishes it, every step's effect applied once (the local
steps under the barrier in SQLite, the HTTP step in busi). And divergence: code that takes
another path on replay than the one recorded is stopped, naming the step."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from dtmx.client import DtmError, Ongoing
from dtmx.client.workflow import Workflow, WorkflowDiverged
from tests.integration.workflow.conftest import WfApp, wait_status
from tests.integration.workflow.crash_app import POINTS
from tests.integration.workflow.ledger import Ledger
from tests.support.busi import BusiServer
from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.services import STORES
from tests.support.util import aeventually, free_port

APP = Path(__file__).with_name("crash_app.py")


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """Crash tests start processes (1-2 s each): SQLite, and the other stores where a test
    asks (indirect parametrisation)."""
    workdir = str(tmp_path_factory.mktemp("dtmx"))
    driver = getattr(request, "param", "sqlite")
    with scratch_store(driver, "dtmx_wfc", workdir) as block, \
            ServerProcess(store=block, workdir=workdir) as s:
        yield s


def due_now(server: ServerProcess, gid: str) -> None:
    """POST resetNextCronTime: the server looks at `gid` now instead of after its backoff."""
    requests.post(f"{server.url}/resetNextCronTime", json={"gid": gid}, timeout=5
                  ).raise_for_status()


class AppProcess:
    def __init__(self, server: ServerProcess, busi: BusiServer, db: Path, port: int) -> None:
        self.args = [sys.executable, str(APP), "--server", server.url, "--port", str(port),
                     "--db", str(db), "--busi", busi.url]
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *extra: str) -> subprocess.Popen[str]:
        p = subprocess.Popen([*self.args, *extra], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


@pytest.fixture
def proc(server: ServerProcess, busi: BusiServer, tmp_path: Path) -> Iterator[AppProcess]:
    a = AppProcess(server, busi, tmp_path / "bank.db", free_port())
    yield a
    a.stop()


async def _finish_after_restart(
    server: ServerProcess, busi: BusiServer, proc: AppProcess, ledger: Ledger, gid: str
) -> None:
    assert await asyncio.to_thread(server.status, gid) == "prepared"
    second = proc.start()  # serves only: the server's resume replays the workflow
    line = await asyncio.to_thread(second.stdout.readline) if second.stdout else ""
    assert line.strip() == "serving", line
    # the resumes that met the dead process backed off: make it due now, as DTM's tests do
    await asyncio.to_thread(due_now, server, gid)
    await wait_status(server, gid, "succeed")
    assert await ledger.balances() == (70, 130)
    assert await ledger.counter() == 1  # the commit callback's effect, once
    assert busi.state.applied_count("TransIn", gid) == 1
    q = await asyncio.to_thread(server.query, gid)
    assert q["transaction"]["result"] == "ZG9uZQ=="  # b"done"


# Every crash point on SQLite; on the other stores the last one, in the commit callback,
# after every branch was recorded: each point costs ~2 s (two app processes), so the store
# differences (reading back records on replay) are covered once per store, not 4 times.
KILL_POINTS = [("sqlite", p) for p in POINTS] + [(s, POINTS[-1]) for s in STORES[1:]]


@pytest.mark.parametrize(("server", "point"), KILL_POINTS, indirect=["server"])
async def test_kill9_at_a_point(
    server: ServerProcess, busi: BusiServer, proc: AppProcess, tmp_path: Path, gid: str,
    point: str,
) -> None:
    ledger = await Ledger(tmp_path / "bank.db").setup()
    first = proc.start("--gid", gid, "--crash-at", point)
    out, _ = await asyncio.to_thread(first.communicate, timeout=30)
    assert first.returncode == -signal.SIGKILL, out
    assert f"crashing at {point}" in out
    await _finish_after_restart(server, busi, proc, ledger, gid)


@pytest.mark.parametrize("server", STORES, indirect=True)
async def test_kill9_during_http_step(
    server: ServerProcess, busi: BusiServer, proc: AppProcess, tmp_path: Path, gid: str
) -> None:
    # killed from outside while busi is still answering branch 02
    ledger = await Ledger(tmp_path / "bank.db").setup()
    busi.state.set("TransIn", "SLEEP:0.5", "SUCCESS")
    first = proc.start("--gid", gid)

    async def in_flight() -> bool:
        return busi.state.count("TransIn", gid) == 1

    await aeventually(in_flight)
    first.kill()
    await asyncio.to_thread(first.wait, 10)
    await _finish_after_restart(server, busi, proc, ledger, gid)


async def test_divergence_at_a_step(server: ServerProcess, app: WfApp, gid: str) -> None:
    path = ["a"]

    @app.workflows.register(gid, retry_interval=60)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        if path[0] == "a":
            await wf.new_branch().do(lambda bb: b"a", name="reserve")
        else:
            await wf.new_branch().post("http://127.0.0.1:1/charge", data)
        raise Ongoing("wait")

    with pytest.raises(Ongoing):
        await app.workflows.execute(gid, gid, b"{}")
    path[0] = "b"
    with pytest.raises(WorkflowDiverged) as e:
        await app.workflows.execute(gid, gid, b"{}")
    assert (e.value.branch_id, e.value.op) == ("01", "action")
    assert "'local reserve'" in e.value.message and "'http POST /charge'" in e.value.message
    # the resume endpoint answers an error (retried later), not 409: nothing is rolled back
    status, body = await _resume(app, gid)
    assert status == 500 and "diverged at branch 01" in body["message"]
    assert await asyncio.to_thread(server.status, gid) == "prepared"


async def test_divergence_step_not_reached(server: ServerProcess, app: WfApp, gid: str) -> None:
    steps = [2]

    @app.workflows.register(gid, retry_interval=60)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        for i in range(steps[0]):
            await wf.new_branch().do(lambda bb, i=i: orjson.dumps(i), name=f"step{i}")
        if steps[0] == 2:
            raise Ongoing("wait")

    with pytest.raises(Ongoing):
        await app.workflows.execute(gid, gid, b"")
    steps[0] = 1
    with pytest.raises(WorkflowDiverged, match="without reaching branch 02 \\(local step1\\)"):
        await app.workflows.execute(gid, gid, b"")
    assert await asyncio.to_thread(server.status, gid) == "prepared"


async def _resume(app: WfApp, gid: str) -> tuple[int, dict[str, str]]:
    from dtmx.client.workflow import resume

    return await resume(app.workflows, {"gid": gid, "op": gid, "trans_type": "workflow"}, b"")


@pytest.mark.parametrize("driver", STORES)
async def test_server_kill9_mid_run(
    busi: BusiServer, tmp_path: Path, gid: str, driver: str, cleanup: contextlib.ExitStack
) -> None:
    # The server dies while branch 02 is being called: recording it fails, the workflow
    # stops; the restarted server resumes it, branch 01 answers from its record.
    store = cleanup.enter_context(scratch_store(driver, "dtmx_wfk", str(tmp_path)))
    own = ServerProcess(store=store, workdir=str(tmp_path)).start()
    app = await WfApp(own).start()
    ledger = await Ledger(tmp_path / "bank.db").setup()
    busi.state.set("TransIn", "SLEEP:0.5", "SUCCESS")
    try:
        @app.workflows.register("transfer")
        async def transfer(wf: Workflow, data: bytes) -> None:
            await wf.new_branch().do(lambda bb: ledger.adjust(bb, 1, -30))
            await wf.new_branch().post(f"{busi.url}/TransIn", data)
            await wf.new_branch().do(lambda bb: ledger.adjust(bb, 2, 30))

        run = asyncio.create_task(app.workflows.execute("transfer", gid, b'{"amount":30}'))

        async def in_flight() -> bool:
            return busi.state.count("TransIn", gid) == 1

        await aeventually(in_flight)
        await asyncio.to_thread(own.kill)
        with pytest.raises(DtmError):
            await run
        await asyncio.to_thread(own.start)
        await asyncio.to_thread(due_now, own, gid)
        await wait_status(own, gid, "succeed")
        assert await ledger.balances() == (70, 130)
        assert busi.state.applied_count("TransIn", gid) == 1
    finally:
        await app.stop()
        own.stop()
