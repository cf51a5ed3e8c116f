"""The bank workload: seeded transfers submitted as sagas, TCCs, msgs and workflows through
the SDK.

Each transfer moves `amount` from one account to another. Besides the plain kinds, some
transfers are refused by the bank (they must end failed and leave no money moved) and some
play a misbehaving client: a TCC or msg whose client "crashes" after prepare (the server's
timeout or query_prepared must settle it), and a TCC whose try arrives after its cancel
(the barrier must refuse it), and a workflow whose client stops after its first step (the
servers' resume callbacks must finish it; see chaos/wflow.py). What each client was told
is recorded: that is what the server acknowledged, and the checks hold the server to it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import aiosqlite
from aiohttp import web

from chaos.bank import TABLE
from chaos.faults import rng_for
from chaos.wflow import RESUME_PATH, ClientCrash, WorkflowClients, serve
from dtmx.client import BranchBarrier, DtmClient, DtmError, Failure, Ongoing, Op, Saga, Tcc


class Kind(StrEnum):
    """A transfer's shape."""

    SAGA = "saga"
    SAGA_REFUSED = "saga_refused"
    TCC = "tcc"
    TCC_REFUSED = "tcc_refused"
    TCC_CLIENT_CRASH = "tcc_client_crash"  # tries done, never submitted
    TCC_TRY_AFTER_CANCEL = "tcc_try_after_cancel"  # registered, aborted, then the try arrives
    MSG = "msg"
    MSG_CRASH_COMMITTED = "msg_crash_committed"  # local transaction done, never submitted
    MSG_CRASH_UNCOMMITTED = "msg_crash_uncommitted"  # prepared only
    WORKFLOW = "workflow"
    WORKFLOW_REFUSED = "workflow_refused"
    WORKFLOW_CLIENT_CRASH = "workflow_client_crash"  # stops after its first step, once


_KIND_WEIGHTS = {
    Kind.SAGA: 6, Kind.SAGA_REFUSED: 1, Kind.TCC: 5, Kind.TCC_REFUSED: 1,
    Kind.TCC_CLIENT_CRASH: 1, Kind.TCC_TRY_AFTER_CANCEL: 1, Kind.MSG: 4,
    Kind.MSG_CRASH_COMMITTED: 1, Kind.MSG_CRASH_UNCOMMITTED: 1,
    Kind.WORKFLOW: 4, Kind.WORKFLOW_REFUSED: 1, Kind.WORKFLOW_CLIENT_CRASH: 1,
}

#: what the server must end with, per kind, once the client was acknowledged
EXPECTED = {
    Kind.SAGA: "succeed", Kind.SAGA_REFUSED: "failed", Kind.TCC_REFUSED: "failed",
    Kind.TCC_CLIENT_CRASH: "failed", Kind.TCC_TRY_AFTER_CANCEL: "failed",
    Kind.MSG: "succeed", Kind.MSG_CRASH_COMMITTED: "succeed",
    Kind.MSG_CRASH_UNCOMMITTED: "failed",
    Kind.WORKFLOW: "succeed", Kind.WORKFLOW_REFUSED: "failed",
    Kind.WORKFLOW_CLIENT_CRASH: "succeed",
}


@dataclass
class Transfer:
    """One transfer and what happened to it on the client side."""

    index: int
    gid: str
    kind: Kind
    src: int
    dst: int
    amount: int
    server: int
    #: the final status the server owes this client ("" when it acknowledged nothing)
    owed: str = ""
    error: str = ""
    #: a try the client sent after its cancel (checked to have changed nothing)
    late_try: bool = False
    #: submits repeated on another server after an error
    resubmits: int = 0

    @property
    def payload(self) -> dict[str, object]:
        refused = self.kind in (Kind.SAGA_REFUSED, Kind.TCC_REFUSED, Kind.WORKFLOW_REFUSED)
        return {"from": self.src, "to": self.dst, "amount": self.amount, "fail": refused}


def make_transfer(seed: int, index: int, accounts: int, servers: int) -> Transfer:
    """The index-th transfer of a run: the same for the same seed."""
    r = rng_for(seed, "transfer", index)
    kinds = list(_KIND_WEIGHTS)
    kind = r.choices(kinds, weights=[_KIND_WEIGHTS[k] for k in kinds])[0]
    src = r.randrange(accounts)
    dst = (src + 1 + r.randrange(accounts - 1)) % accounts
    return Transfer(index, f"chaos-{seed}-{index}", kind, src, dst, r.randint(1, 100),
                    r.randrange(servers))


class Workload:
    """Submits transfers from `workers` concurrent clients until told to stop."""

    def __init__(self, *, seed: int, bank_url: str, bank_db: str, server_urls: list[str],
                 accounts: int, workers: int, prepared_timeout: int, callback_port: int,
                 owner_header: str) -> None:
        self.seed = seed
        self.bank = bank_url
        self.bank_db = bank_db
        self.clients = [DtmClient(u, timeout=5.0) for u in server_urls]
        self.accounts = accounts
        self.workers = workers
        self.prepared_timeout = prepared_timeout
        self.transfers: list[Transfer] = []
        self._next = 0
        self.callback_port = callback_port
        self.workflows = WorkflowClients(
            self.clients, bank_url, f"http://127.0.0.1:{callback_port}{RESUME_PATH}", TABLE,
            owner_header, self._server_of)
        self._runner: web.AppRunner | None = None

    def _server_of(self, gid: str) -> int:
        """The server whose client started `gid` (gids are chaos-<seed>-<index>)."""
        index = int(gid.rsplit("-", 1)[1])
        return self.transfers[index].server if index < len(self.transfers) else 0

    def url(self, route: str) -> str:
        return f"{self.bank}/{route}"

    async def run(self, until: Callable[[], bool]) -> None:
        """Keep `workers` clients busy until `until()` is true (the resume endpoint is
        served from now until `close`)."""
        if self._runner is None:
            self._runner = await serve(self.workflows.resume_handler, self.callback_port)
        await asyncio.gather(*(self._worker(until) for _ in range(self.workers)))

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        for c in self.clients:
            await c.aclose()

    async def _worker(self, until: Callable[[], bool]) -> None:
        while not until():
            t = make_transfer(self.seed, self._next, self.accounts, len(self.clients))
            self._next += 1
            self.transfers.append(t)
            try:
                await self._submit(t, self.clients[t.server])
            except (DtmError, OSError, TimeoutError, aiosqlite.Error) as e:
                t.error = f"{type(e).__name__}: {e}"[:200]
                await asyncio.sleep(0.2)  # its server may be down: do not spin on it

    async def _submit(self, t: Transfer, dtm: DtmClient) -> None:
        if t.kind in (Kind.SAGA, Kind.SAGA_REFUSED):
            saga = (dtm.saga(t.gid)
                    .add(self.url("TransOut"), self.url("TransOutRevert"), t.payload)
                    .add(self.url("TransIn"), self.url("TransInRevert"), t.payload))
            await self._submit_anywhere(t, saga)
            t.owed = EXPECTED[t.kind]
        elif t.kind in (Kind.MSG, Kind.MSG_CRASH_COMMITTED, Kind.MSG_CRASH_UNCOMMITTED):
            await self._msg(t, dtm)
        elif t.kind in (Kind.WORKFLOW, Kind.WORKFLOW_REFUSED, Kind.WORKFLOW_CLIENT_CRASH):
            await self._workflow(t)
        else:
            await self._tcc(t, dtm)

    async def _submit_anywhere(self, t: Transfer, saga: Saga) -> None:
        """Submit; when the server cannot be reached or fails, submit the same gid to the
        next server (a client behind a load balancer). DTM answers a repeated submit of a
        submitted saga with success and runs it once, which the checks hold it to."""
        for attempt in range(3):
            saga.client = self.clients[(t.server + attempt) % len(self.clients)]
            try:
                await saga.submit()
                return
            except (DtmError, OSError, TimeoutError) as e:
                if isinstance(e, Failure) or attempt == 2:
                    raise
                t.resubmits += 1
                await asyncio.sleep(0.3)

    async def _workflow(self, t: Transfer) -> None:
        """Run the transfer workflow; once prepared, its outcome is owed (a stop halfway
        leaves it to the servers' resume calls)."""
        if t.kind is Kind.WORKFLOW_CLIENT_CRASH:
            self.workflows.crash_once.add(t.gid)
        try:
            await self.workflows.execute(t.server, t.gid, t.payload)
        except Failure:
            t.owed = "failed"
            return
        except (Ongoing, ClientCrash):  # both come after its prepare and first step
            t.owed = EXPECTED[t.kind]
            return
        t.owed = "succeed"

    async def _tcc(self, t: Transfer, dtm: DtmClient) -> None:
        tcc = dtm.tcc(t.gid)
        tcc.timeout_to_fail = self.prepared_timeout
        await tcc.prepare()
        if t.kind is Kind.TCC_CLIENT_CRASH:
            t.owed = EXPECTED[t.kind]  # prepared: the server's timeout must cancel it
            await self._tries(tcc, t)
            return
        if t.kind is Kind.TCC_TRY_AFTER_CANCEL:
            await self._try_after_cancel(tcc, t, dtm)
            return
        try:
            await self._tries(tcc, t)
        except DtmError as e:
            await tcc.abort(f"{type(e).__name__}")
            t.owed = "failed"
            return
        await tcc.submit()
        t.owed = "succeed"

    async def _tries(self, tcc: Tcc, t: Transfer) -> None:
        await tcc.call_branch(t.payload, self.url("TransOutTry"), self.url("TransOutConfirm"),
                              self.url("TransOutCancel"))
        await tcc.call_branch(t.payload, self.url("TransInTry"), self.url("TransInConfirm"),
                              self.url("TransInCancel"))

    async def _try_after_cancel(self, tcc: Tcc, t: Transfer, dtm: DtmClient) -> None:
        # registered without their tries (empty try URL), aborted: the cancels run first
        await tcc.call_branch(t.payload, "", self.url("TransOutConfirm"),
                              self.url("TransOutCancel"))
        await tcc.call_branch(t.payload, "", self.url("TransInConfirm"),
                              self.url("TransInCancel"))
        await tcc.abort("chaos: try after cancel")
        t.owed = "failed"
        end = time.monotonic() + 30
        while time.monotonic() < end:  # the late tries go after the cancels were made
            state = await dtm.query(t.gid)
            if state is not None and state.status == "failed":
                break
            await asyncio.sleep(0.2)
        else:
            return
        t.late_try = True
        for bid, route in (("01", "TransOutTry"), ("02", "TransInTry")):
            await dtm.request_branch("POST", self.url(route), tcc, branch_id=bid, op=Op.TRY,
                                     data=_json(t.payload))

    async def _msg(self, t: Transfer, dtm: DtmClient) -> None:
        msg = dtm.msg(t.gid).add(self.url("MsgIn"), t.payload)
        msg.timeout_to_fail = self.prepared_timeout
        qp = self.url("QueryPrepared")
        if t.kind is Kind.MSG:
            await msg.do_and_submit(qp, lambda b: self._debit(b, t), barrier_table=TABLE)
            t.owed = "succeed"
            return
        await msg.prepare(qp)
        if t.kind is Kind.MSG_CRASH_UNCOMMITTED:
            t.owed = "failed"
            return
        barrier = BranchBarrier(trans_type="msg", gid=t.gid, branch_id="00", op="msg",
                                table=TABLE)
        try:
            await self._debit(barrier, t)
        except DtmError:  # the server's query_prepared came first: the msg fails
            t.owed = "failed"
            return
        t.owed = "succeed"

    async def _debit(self, barrier: BranchBarrier, t: Transfer) -> None:
        """The msg's local transaction: take the money out, in the bank's database."""

        async def work(c: aiosqlite.Connection) -> None:
            await c.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?",
                            (t.amount, t.src))
            await c.execute("INSERT INTO effects (gid, branch_id, op, route, account, delta) "
                            "VALUES (?, ?, ?, 'MsgLocal', ?, ?)",
                            (t.gid, "00", "msg", t.src, -t.amount))

        async with aiosqlite.connect(self.bank_db, timeout=30, isolation_level=None) as conn:
            await conn.execute("PRAGMA busy_timeout=30000")
            await barrier.call(conn, work)


def _json(payload: dict[str, object]) -> str:
    import orjson

    return orjson.dumps(payload).decode()
