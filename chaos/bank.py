"""The bank's branch service: a real HTTP process whose handlers move money in a SQLite
database through the barrier, and misbehave as `faults.branch_fault` says.

Every effect is a row of `effects`, written in the same local transaction as the balance
change and the barrier rows, so the table is the exact list of effects applied. Every call is
logged with the owner token it carried (the servers run with `BranchOwnerHeader`; a call
without one is the workload's own) and its start and end times; the harness reads the log
and the counters at `/chaos/calls` when the run is over.

Run: `python -m chaos.bank --port P --db bank.db --seed N --rate 0.2 --timeout 1`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiosqlite
from aiohttp import web

from chaos.faults import BranchFault, branch_fault, rng_for
from dtmx.client.barrier import BranchBarrier, Failure, ensure_table

TABLE = "barrier"
#: the header the servers name their claim in (their `BranchOwnerHeader`)
OWNER_HEADER = "Dtmx-Owner"

#: route -> (which account of the payload, sign of the balance change)
MONEY: dict[str, tuple[str, int]] = {
    "TransOut": ("from", -1), "TransOutRevert": ("from", 1),
    "TransIn": ("to", 1), "TransInRevert": ("to", -1),
    "TransOutTry": ("from", -1), "TransOutConfirm": ("from", 0), "TransOutCancel": ("from", 1),
    "TransInTry": ("to", 0), "TransInConfirm": ("to", 1), "TransInCancel": ("to", 0),
    "MsgIn": ("to", 1),
}
#: routes that refuse (FAILURE) a transfer whose payload says "fail"
REFUSING = {"TransIn", "TransInTry"}

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS effects (id INTEGER PRIMARY KEY AUTOINCREMENT, gid TEXT, "
    "branch_id TEXT, op TEXT, route TEXT, account INTEGER, delta INTEGER)",
)


async def init_db(path: str, accounts: int, balance: int) -> None:
    """Create the bank's tables and accounts (a fresh file per run)."""
    async with aiosqlite.connect(path) as conn:
        await conn.execute("PRAGMA journal_mode=WAL")
        for sql in SCHEMA:
            await conn.execute(sql)
        await conn.executemany("INSERT OR REPLACE INTO accounts VALUES (?, ?)",
                               [(i, balance) for i in range(accounts)])
        await conn.commit()
        await ensure_table(conn, TABLE)


async def apply(conn: aiosqlite.Connection, route: str, q: dict[str, str],
                body: dict[str, Any]) -> bool:
    """Run the route's business under the barrier; True if the business ran (committed)."""
    applied = False

    async def business(c: aiosqlite.Connection) -> None:
        nonlocal applied
        if route in REFUSING and body.get("fail"):
            raise Failure("refused by the bank")
        side, sign = MONEY[route]
        account, delta = int(body[side]), sign * int(body["amount"])
        await c.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?",
                        (delta, account))
        await c.execute("INSERT INTO effects (gid, branch_id, op, route, account, delta) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (q["gid"], q["branch_id"], q["op"], route, account, delta))
        applied = True

    barrier = BranchBarrier.from_query(q, table=TABLE)
    await barrier.call(conn, business)
    return applied


class Bank:
    """The handlers, the fault decisions and the call log."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.calls: list[dict[str, Any]] = []
        self.faults: Counter[str] = Counter()
        self.seen: Counter[tuple[str, str, str]] = Counter()
        self.conn: aiosqlite.Connection | None = None
        self.lock = asyncio.Lock()  # one writer at a time on the bank's own connection
        self.pending: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self.conn = await aiosqlite.connect(self.args.db, timeout=30, isolation_level=None)
        await self.conn.execute("PRAGMA busy_timeout=30000")

    async def handle(self, request: web.Request) -> web.Response:
        route = request.match_info["route"]
        q = {k: request.query.get(k, "") for k in ("gid", "branch_id", "op", "trans_type")}
        raw = await request.read()
        source = request.headers.get(OWNER_HEADER, "")
        key = (q["gid"], q["branch_id"], q["op"])
        self.seen[key] += 1
        fault = branch_fault(self.args.seed, self.args.rate, *key, self.seen[key])
        status, body = await self.process(route, q, raw, fault, source, dup=False)
        if fault is BranchFault.DUPLICATE:
            task = asyncio.create_task(self.redeliver(route, q, raw, source))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        return web.json_response(body, status=status)

    async def redeliver(self, route: str, q: dict[str, str], raw: bytes, source: str) -> None:
        delay = rng_for(self.args.seed, "dup", *q.values()).uniform(0.05, 1.5)
        await asyncio.sleep(delay)
        await self.process(route, q, raw, BranchFault.NONE, source, dup=True)

    async def process(self, route: str, q: dict[str, str], raw: bytes, fault: BranchFault,
                      source: str, *, dup: bool) -> tuple[int, dict[str, Any]]:
        t0 = time.time()
        entry: dict[str, Any] = {"route": route, **q, "owner": source, "t0": t0,
                                 "fault": fault.value, "dup": dup, "applied": False}
        if fault is not BranchFault.NONE and not dup:
            self.faults[fault.value] += 1
        status, body = await self._answer(route, q, raw, fault, entry)
        entry["t1"] = time.time()
        entry["status"] = status
        self.calls.append(entry)
        return status, body

    async def _answer(self, route: str, q: dict[str, str], raw: bytes, fault: BranchFault,
                      entry: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if fault is BranchFault.ERROR:
            return 500, {"message": "chaos: error before the effect"}
        if fault is BranchFault.ONGOING:
            return 425, {"dtm_result": "ONGOING"}
        if fault is BranchFault.SLOW:
            await asyncio.sleep(self.args.timeout * 0.6)
        if fault is BranchFault.TIMEOUT:
            await asyncio.sleep(self.args.timeout + 0.4)
        try:
            if route == "QueryPrepared":
                return await self._query_prepared(q, entry)
            body = json.loads(raw) if raw else {}
            assert self.conn is not None
            async with self.lock:
                if self._stale(fault, entry):
                    return 503, {"message": "chaos: dropped, its caller gave up"}
                entry["applied"] = await apply(self.conn, route, q, body)
        except Failure as e:
            return 409, {"dtm_result": "FAILURE", "message": str(e)}
        except (aiosqlite.Error, ValueError, KeyError) as e:
            return 500, {"message": f"{type(e).__name__}: {e}"}
        if fault is BranchFault.APPLIED_500:
            return 500, {"message": "chaos: error after the effect"}
        return 200, {"dtm_result": "SUCCESS"}

    def _stale(self, fault: BranchFault, entry: dict[str, Any]) -> bool:
        """A request that waited for the bank's lock until its caller's timeout passed is
        dropped, as a network would have: on a loaded machine the bank would otherwise
        work through answers nobody waits for, and fall ever further behind. (Requests
        meant to land late, the TIMEOUT fault and redeliveries, are kept.)"""
        if fault is BranchFault.TIMEOUT or entry["dup"]:
            return False
        if time.time() - entry["t0"] < self.args.timeout:
            return False
        self.faults["dropped_stale (load)"] += 1
        return True

    async def _query_prepared(self, q: dict[str, str],
                              entry: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        barrier = BranchBarrier.from_query(q, table=TABLE)
        assert self.conn is not None
        async with self.lock:
            if self._stale(BranchFault.NONE, entry):
                return 503, {"message": "chaos: dropped, its caller gave up"}
            try:
                await barrier.query_prepared(self.conn)
            except Failure:
                return 409, {"dtm_result": "FAILURE"}
        return 200, {"dtm_result": "SUCCESS"}

    async def report(self, request: web.Request) -> web.Response:
        # redeliveries still sleeping are part of the run: wait for them before reporting
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=10)
        # the log of a long run is large: written to a file, not sent back as one answer
        path = Path(self.args.db).with_name("calls.json")
        path.write_text(json.dumps(self.calls))
        return web.json_response({"calls_file": str(path), "faults": dict(self.faults)})


def main() -> None:
    p = argparse.ArgumentParser(description="chaos bank branch service")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--rate", type=float, default=0.2)
    p.add_argument("--timeout", type=float, default=1.0, help="the servers' RequestTimeout")
    args = p.parse_args()
    bank = Bank(args)

    async def on_startup(_: web.Application) -> None:
        await bank.open()

    async def on_cleanup(_: web.Application) -> None:
        # aiosqlite's worker thread is not a daemon: left open, it keeps the process alive
        if bank.conn is not None:
            await bank.conn.close()

    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/chaos/calls", bank.report)
    app.router.add_route("*", "/bank/{route}", bank.handle)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
