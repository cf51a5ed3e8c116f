"""DTM's barrier scenarios against a real server, with the barrier on real stores: a Redis
barrier inside a real saga, a TCC try that arrives after the timeout's cancel, and
`do_and_submit` whose local commit fails (or fails after committing) with the barrier in
SQLite, in Redis and with the client and query_prepared over gRPC.

The money lives in a SQLite account table or in Redis keys; every test checks balances."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import grpc
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from dtmx.client import BranchBarrier, DtmClient, Failure
from dtmx.client.barrier import ensure_table
from dtmx.client.grpc import GrpcTransport, branch_info_from_grpc_metadata, grpc_status_for
from tests.support.server import ServerProcess
from tests.support.util import aeventually, free_port

EXPIRE = 600
TABLE = "barrier"


class Bank:
    """One SQLite account (id 1, 100) and two Redis accounts, behind barrier-guarded routes."""

    def __init__(self, db: str, redis: aioredis.Redis) -> None:
        self.db, self.redis = db, redis
        self.port = free_port()
        tag = uuid.uuid4().hex[:8]
        self.keys = {"out": f"dtmx-bank:{tag}:out", "in": f"dtmx-bank:{tag}:in"}
        self.delivered: list[str] = []
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def start(self) -> None:
        async with aiosqlite.connect(self.db) as conn:
            await conn.execute("CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER)")
            await conn.execute("INSERT INTO account VALUES (1, 100)")
            await conn.commit()
            await ensure_table(conn, TABLE)
        await self.redis.set(self.keys["out"], 100, ex=EXPIRE)
        await self.redis.set(self.keys["in"], 0, ex=EXPIRE)
        app = web.Application()
        app.router.add_post("/redis/{side}/{op}", self.redis_adjust)
        app.router.add_get("/redis/qp", self.redis_qp)
        app.router.add_post("/sql/{op}", self.sql_tcc)
        app.router.add_get("/sql/qp", self.sql_qp)
        app.router.add_post("/deliver", self.deliver)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    @staticmethod
    def _answer(e: Failure | None) -> web.Response:
        if e is not None:
            return web.json_response({"dtm_result": "FAILURE", "message": str(e)}, status=409)
        return web.json_response({"dtm_result": "SUCCESS"})

    async def redis_adjust(self, request: web.Request) -> web.Response:
        side, op = request.match_info["side"], request.match_info["op"]
        amount = int((await request.json())["amount"])
        sign = (-1 if side == "out" else 1) * (-1 if op == "compensate" else 1)
        barrier = BranchBarrier.from_query(request.query)
        try:
            await barrier.redis_check_adjust_amount(self.redis, self.keys[side], sign * amount,
                                                    EXPIRE)
        except Failure as e:
            return self._answer(e)
        return self._answer(None)

    async def redis_qp(self, request: web.Request) -> web.Response:
        try:
            await BranchBarrier.from_query(request.query).redis_query_prepared(self.redis, EXPIRE)
        except Failure as e:
            return self._answer(e)
        return self._answer(None)

    async def sql_tcc(self, request: web.Request) -> web.Response:
        """TCC on account 1: try freezes 30 (takes it), cancel gives it back, confirm keeps."""
        change = {"try": -30, "cancel": 30, "confirm": 0}[request.match_info["op"]]
        await self.sql_adjust(BranchBarrier.from_query(request.query, table=TABLE), change)
        return self._answer(None)

    async def sql_adjust(self, barrier: BranchBarrier, change: int, *, then_fail: bool = False
                         ) -> None:
        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute("UPDATE account SET balance = balance + ? WHERE id = 1", (change,))
            if then_fail:
                raise RuntimeError("commit failed")  # rolls the update and the barrier back

        barrier.table = TABLE
        async with aiosqlite.connect(self.db) as conn:
            await barrier.call(conn, work)

    async def sql_qp(self, request: web.Request) -> web.Response:
        barrier = BranchBarrier.from_query(request.query, table=TABLE)
        async with aiosqlite.connect(self.db) as conn:
            try:
                await barrier.query_prepared(conn)
            except Failure as e:
                return self._answer(e)
        return self._answer(None)

    async def deliver(self, request: web.Request) -> web.Response:
        self.delivered.append(request.query["gid"])
        return self._answer(None)

    async def sql_balance(self) -> int:
        async with aiosqlite.connect(self.db) as conn:
            row = await (await conn.execute("SELECT balance FROM account WHERE id = 1")).fetchone()
            assert row is not None
            return int(row[0])

    async def redis_balances(self) -> tuple[int | None, int | None]:
        out, in_ = await self.redis.get(self.keys["out"]), await self.redis.get(self.keys["in"])
        return (None if out is None else int(out)), (None if in_ is None else int(in_))


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = ServerProcess().start()  # TimeoutToFail 1 s
    yield s
    s.stop()


@pytest.fixture
async def bank(tmp_path: Path) -> AsyncIterator[Bank]:
    rd = aioredis.Redis(host="127.0.0.1", port=6379, decode_responses=True)
    b = Bank(str(tmp_path / "bank.db"), rd)
    await b.start()
    yield b
    await b.stop()
    await rd.delete(*b.keys.values())
    await rd.aclose()


@pytest.fixture
async def dtm(server: ServerProcess) -> AsyncIterator[DtmClient]:
    async with DtmClient(server.url) as c:
        yield c


async def wait(dtm: DtmClient, gid: str, status: str) -> None:
    async def reached() -> bool:
        t = await dtm.query(gid)
        return t is not None and t.status.value == status
    await aeventually(reached, timeout=15, interval=0.05)


async def test_redis_barrier_in_a_saga_normal_and_duplicate(dtm: DtmClient, bank: Bank) -> None:
    gid = await dtm.new_gid()
    saga = (dtm.saga(gid)
            .add(bank.url("redis/out/action"), bank.url("redis/out/compensate"), {"amount": 30})
            .add(bank.url("redis/in/action"), bank.url("redis/in/compensate"), {"amount": 30}))
    await saga.submit()
    await wait(dtm, gid, "succeed")
    assert await bank.redis_balances() == (70, 30)
    # a duplicate delivery of the first action (a retry after a lost answer) changes nothing
    async with aiohttp.ClientSession() as http:
        r = await http.post(bank.url("redis/out/action"), json={"amount": 30}, params={
            "gid": gid, "trans_type": "saga", "branch_id": "01", "op": "action"})
        assert r.status == 200
    assert await bank.redis_balances() == (70, 30)


async def test_redis_barrier_in_a_saga_rollback(dtm: DtmClient, bank: Bank) -> None:
    await bank.redis.set(bank.keys["out"], 10, ex=EXPIRE)  # not enough: TransOut fails
    gid = await dtm.new_gid()
    saga = (dtm.saga(gid)
            .add(bank.url("redis/in/action"), bank.url("redis/in/compensate"), {"amount": 30})
            .add(bank.url("redis/out/action"), bank.url("redis/out/compensate"), {"amount": 30}))
    await saga.submit()
    await wait(dtm, gid, "failed")
    # TransIn compensated; TransOut's compensation was a null compensation (nothing to undo).
    # (A missing account key is not a way to fail here: like DTM's script, the barrier checks
    # the amount before the barrier, so even a null compensation fails on a missing key.)
    assert await bank.redis_balances() == (10, 0)


async def test_tcc_try_after_the_timeout_cancel_is_refused(dtm: DtmClient, bank: Bank) -> None:
    """The try's request is delayed past TimeoutToFail (1 s): the server cancels first (a null
    compensation in the barrier), then the try arrives and must not take the money."""
    gid = await dtm.new_gid()
    tcc = dtm.tcc(gid)
    await tcc.prepare()
    await dtm.transport.register_branch({
        "gid": gid, "trans_type": "tcc", "branch_id": "01", "data": "{}",
        "confirm": bank.url("sql/confirm"), "cancel": bank.url("sql/cancel")})
    await wait(dtm, gid, "failed")
    assert await bank.sql_balance() == 100  # the cancel gave nothing back: nothing was taken
    async with aiohttp.ClientSession() as http:
        r = await http.post(bank.url("sql/try"), json={}, params={
            "gid": gid, "trans_type": "tcc", "branch_id": "01", "op": "try"})
        assert r.status == 200  # answered, but skipped by the barrier
    assert await bank.sql_balance() == 100


@pytest.mark.parametrize("store", ["sql", "redis"])
async def test_do_and_submit_commit_failed(dtm: DtmClient, bank: Bank, store: str) -> None:
    """DTM's TestMsgDoAndSubmitCommitFailed / TestMsgRedisDoCommitFailed: the local
    transaction does not commit and busi raises; query_prepared says so; the msg fails."""
    gid = await dtm.new_gid()
    msg = dtm.msg(gid).add(bank.url("deliver"), {"amount": 30})

    async def busi(barrier: BranchBarrier) -> None:
        if store == "sql":
            await bank.sql_adjust(barrier, -30, then_fail=True)
        raise RuntimeError("commit failed")

    with pytest.raises(RuntimeError, match="commit failed"):
        await msg.do_and_submit(bank.url(f"{store}/qp"), busi)
    await wait(dtm, gid, "failed")
    assert bank.delivered == []
    assert await bank.sql_balance() == 100 and await bank.redis_balances() == (100, 0)


@pytest.mark.parametrize("store", ["sql", "redis"])
async def test_do_and_submit_commit_after_failed(dtm: DtmClient, bank: Bank, store: str) -> None:
    """DTM's TestMsgDoAndSubmitCommitAfterFailed / TestMsgRedisDoCommitAfterFailed: the local
    transaction commits, then busi raises; query_prepared says committed; the msg is
    delivered once and busi's error still reaches the caller."""
    gid = await dtm.new_gid()
    msg = dtm.msg(gid).add(bank.url("deliver"), {"amount": 30})

    async def busi(barrier: BranchBarrier) -> None:
        if store == "sql":
            await bank.sql_adjust(barrier, -30)
        else:
            await barrier.redis_check_adjust_amount(bank.redis, bank.keys["out"], -30, EXPIRE)
        raise RuntimeError("after commit")

    with pytest.raises(RuntimeError, match="after commit"):
        await msg.do_and_submit(bank.url(f"{store}/qp"), busi)
    await wait(dtm, gid, "succeed")
    await aeventually(lambda: _true(bank.delivered == [gid]))
    if store == "sql":
        assert await bank.sql_balance() == 70
    else:
        assert await bank.redis_balances() == (70, 0)


class GrpcBank(grpc.GenericRpcHandler):
    """gRPC twin of the SQL routes: `QueryPrepared` (barrier) and `Deliver`."""

    def __init__(self, bank: Bank) -> None:
        self.bank = bank

    def service(self, details: Any) -> grpc.RpcMethodHandler:
        name = details.method.rsplit("/", 1)[-1]

        async def handle(request: bytes, context: Any) -> bytes:
            info = branch_info_from_grpc_metadata(context)
            if name == "Deliver":
                self.bank.delivered.append(info.gid)
                return b""
            barrier = BranchBarrier(trans_type=info.trans_type.value, gid=info.gid,
                                    branch_id=info.branch_id, op=info.op.value, table=TABLE)
            async with aiosqlite.connect(self.bank.db) as conn:
                try:
                    await barrier.query_prepared(conn)
                except Failure as e:
                    code, message = grpc_status_for(e)
                    await context.abort(code, message)
            return b""

        return grpc.unary_unary_rpc_method_handler(handle)


@pytest.mark.parametrize("committed", [False, True], ids=["commit-failed", "commit-after-failed"])
async def test_do_and_submit_over_grpc(server: ServerProcess, bank: Bank, committed: bool) -> None:
    """The gRPC variants: client over gRPC, query_prepared and the msg's action gRPC methods."""
    gsrv = grpc.aio.server()
    gsrv.add_generic_rpc_handlers((GrpcBank(bank),))
    port = free_port()
    gsrv.add_insecure_port(f"127.0.0.1:{port}")
    await gsrv.start()
    base = f"127.0.0.1:{port}/bank.Bank"
    try:
        async with DtmClient(transport=GrpcTransport(server.grpc_target, timeout=5)) as dtm:
            gid = await dtm.new_gid()
            msg = dtm.msg(gid).add(f"{base}/Deliver", b"")

            async def busi(barrier: BranchBarrier) -> None:
                await bank.sql_adjust(barrier, -30, then_fail=not committed)
                raise RuntimeError("after commit")

            with pytest.raises(RuntimeError):
                await msg.do_and_submit(f"{base}/QueryPrepared", busi)
            await wait(dtm, gid, "succeed" if committed else "failed")
            await aeventually(lambda: _true(bank.delivered == ([gid] if committed else [])))
    finally:
        await gsrv.stop(None)
    assert await bank.sql_balance() == (70 if committed else 100)


async def _true(v: bool) -> bool:
    return v
