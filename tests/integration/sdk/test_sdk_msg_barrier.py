"""Msg.do_and_submit with a real barrier (SQLite) and a real server, in the awkward cases:
the local transaction commits too late, fails, or the server goes down in between."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite
import pytest
from aiohttp import web

from dtmx.client import BranchBarrier, DtmClient, DtmError, Failure
from dtmx.client.barrier import Duplicated, ensure_table
from tests.support.server import ServerProcess
from tests.support.util import aeventually, free_port

TABLE = "barrier"


class LocalService:
    """A service with one account in SQLite, a query_prepared endpoint and a msg action."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.port = free_port()
        self.queried = 0
        self.delivered: list[str] = []
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def start(self) -> None:
        async with aiosqlite.connect(self.db) as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY, "
                               "balance INTEGER)")
            await conn.execute("INSERT OR REPLACE INTO account VALUES (1, 100)")
            await conn.commit()
            await ensure_table(conn, TABLE)
        app = web.Application()
        app.router.add_get("/qp", self.query_prepared)
        app.router.add_post("/deliver", self.deliver)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def query_prepared(self, request: web.Request) -> web.Response:
        self.queried += 1
        barrier = BranchBarrier.from_query(request.query, table=TABLE)
        async with aiosqlite.connect(self.db) as conn:
            try:
                await barrier.query_prepared(conn)
            except Failure:
                return web.json_response({"dtm_result": "FAILURE"}, status=409)
        return web.json_response({"dtm_result": "SUCCESS"})

    async def deliver(self, request: web.Request) -> web.Response:
        self.delivered.append(request.query["gid"])
        return web.json_response({"dtm_result": "SUCCESS"})

    async def debit(self, barrier: BranchBarrier, amount: int) -> None:
        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute("UPDATE account SET balance = balance - ? WHERE id = 1", (amount,))

        barrier.table = TABLE
        async with aiosqlite.connect(self.db) as conn:
            await barrier.call(conn, work)

    async def balance(self) -> int:
        async with aiosqlite.connect(self.db) as conn:
            row = await (await conn.execute("SELECT balance FROM account WHERE id = 1")).fetchone()
            assert row is not None
            return int(row[0])


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    s = ServerProcess().start()  # TimeoutToFail 1 s: the back-check comes quickly
    yield s
    s.stop()


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalService]:
    svc = LocalService(str(tmp_path / "local.db"))
    await svc.start()
    yield svc
    await svc.stop()


async def test_local_commit_after_the_back_check_is_refused(server: ServerProcess,
                                                            local: LocalService) -> None:
    # DTM's TestMsgDoAndSubmitBusiLater: the server asks before the local transaction commits
    async with DtmClient(server.url) as dtm:
        msg = dtm.msg(await dtm.new_gid()).add(local.url("deliver"), {"amount": 30})

        async def late(barrier: BranchBarrier) -> None:
            await aeventually(lambda: _true(local.queried >= 1), timeout=15)
            await local.debit(barrier, 30)

        with pytest.raises(Duplicated):
            await msg.do_and_submit(local.url("qp"), late)
        await wait(server, msg.gid, "failed")
    assert await local.balance() == 100  # the late local transaction rolled back
    assert local.delivered == []


async def test_local_failure_aborts(server: ServerProcess, local: LocalService) -> None:
    async with DtmClient(server.url) as dtm:
        msg = dtm.msg(await dtm.new_gid()).add(local.url("deliver"), {})

        async def refuse(barrier: BranchBarrier) -> None:
            raise Failure("insufficient balance")

        with pytest.raises(Failure):
            await msg.do_and_submit(local.url("qp"), refuse)
        await wait(server, msg.gid, "failed")
    assert local.delivered == [] and await local.balance() == 100


async def test_server_down_after_local_commit_is_resolved_by_back_check(
        server: ServerProcess, local: LocalService) -> None:
    async with DtmClient(server.url) as dtm:
        msg = dtm.msg(await dtm.new_gid()).add(local.url("deliver"), {})

        async def commit_then_crash(barrier: BranchBarrier) -> None:
            await local.debit(barrier, 30)
            server.kill()  # the submit that follows cannot reach the server

        with pytest.raises(DtmError):
            await msg.do_and_submit(local.url("qp"), commit_then_crash)
        server.start()
        await wait(server, msg.gid, "succeed")  # prepared -> back-check -> delivered
    assert local.delivered == [msg.gid]
    assert await local.balance() == 70


async def test_server_down_before_prepare_runs_nothing(local: LocalService) -> None:
    async with DtmClient(f"http://127.0.0.1:{free_port()}/api/dtmsvr") as dtm:
        msg = dtm.msg("never-prepared").add(local.url("deliver"), {})
        ran: list[bool] = []

        async def busi(barrier: BranchBarrier) -> None:
            ran.append(True)

        with pytest.raises(DtmError):
            await msg.do_and_submit(local.url("qp"), busi)
    assert ran == [] and await local.balance() == 100


async def _true(v: bool) -> bool:
    return v


async def wait(server: ServerProcess, gid: str, status: str) -> None:
    # in a thread: the local service answering the back-check runs on this event loop
    await asyncio.to_thread(server.wait_status, gid, status)
