"""A workflow in a FastAPI service on SQLite: a local step, an HTTP step, and an XA step.

The `transfer` workflow takes `amount` from account 1 with local code (branch 01), then
calls TransIn over HTTP to give it to account 2 (branch 02). The dtmx server records each
finished step; if TransIn refuses, the workflow's `Failure` runs the rollback callback of
branch 01, which gives the money back. Both accounts change inside `BranchBarrier.call`, so
a step that runs again (after a crash, on a resume) changes nothing twice.

With --xa-pg DSN (a PostgreSQL with max_prepared_transactions > 0), a step between the two
writes the transfer to a log table there as an XA transaction: prepared as the step,
committed when the workflow succeeds, rolled back when it fails (--xa-refuse: the log
refuses, and the transfer rolls back; --refuse-in: the prepared log row is rolled back).

Run it from the repository root, with a dtmx server in another terminal:

    .venv/bin/dtmx serve                                         # HTTP :36789
    .venv/bin/python examples/fastapi_workflow.py                # 1=100 2=100 -> 1=70 2=130
    .venv/bin/python examples/fastapi_workflow.py --refuse-in    # rolled back: 1=100 2=100
    .venv/bin/python examples/fastapi_workflow.py --interrupt    # resumed by the server

With --interrupt the workflow stops after its first step (it raises `Ongoing`, as code
waiting for something would); the server calls the resume endpoint later, the workflow runs
again, branch 01 answers from its record and branch 02 runs. The script serves on --port
(default 8082), resets the balances to 100, runs one workflow through the server at
$DTMX_SERVER (default http://127.0.0.1:36789/api/dtmsvr), waits for its end and prints the
balances before and after. The server must be able to reach 127.0.0.1:--port.
"""

import argparse
import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosqlite
import asyncpg
import orjson
from fastapi import FastAPI, Request

from dtmx.client import BranchBarrier, DtmClient, Failure, Ongoing
from dtmx.client.barrier import ensure_table
from dtmx.client.starlette import dtm_endpoint
from dtmx.client.workflow import Workflow, Workflows, starlette_endpoint

from _common import balances, serving, setup_db, wait_finished  # plumbing: examples/_common.py

DTMX_SERVER = os.environ.get("DTMX_SERVER", "http://127.0.0.1:36789/api/dtmsvr")
BARRIER_TABLE = "barrier"  # next to the accounts: the barrier row commits with the change
# The XA step's schema in PostgreSQL: the log table and a barrier table of the same name,
# found through the connection's search_path.
XA_SCHEMA = "dtmx_wf_example"

app = FastAPI()
client = DtmClient(DTMX_SERVER)


async def adjust(bb: BranchBarrier, user_id: int, delta: int) -> None:
    """Add `delta` to an account at most once for this branch and op, or raise `Failure`."""

    async def business(conn: aiosqlite.Connection) -> None:
        cur = await conn.execute(
            "UPDATE account SET balance = balance + ? WHERE user_id = ? AND balance + ? >= 0",
            (delta, user_id, delta),
        )
        if cur.rowcount != 1:
            raise Failure(f"account {user_id}: insufficient balance")

    async with aiosqlite.connect(app.state.db) as conn:
        await bb.call(conn, business)


@app.post("/api/TransIn")
@dtm_endpoint  # None -> 200, Failure -> 409: the workflow's step sees the same
async def trans_in(request: Request) -> None:
    if app.state.refuse_in:
        raise Failure("TransIn refused")
    amount = orjson.loads(await request.body())["amount"]
    barrier = BranchBarrier.from_query(request.query_params, table=BARRIER_TABLE)
    await adjust(barrier, 2, amount)


def make_workflows(port: int) -> Workflows:
    workflows = Workflows(
        client, f"http://127.0.0.1:{port}/workflow/resume", barrier_table=BARRIER_TABLE
    )

    @workflows.register("transfer")
    async def transfer(wf: Workflow, data: bytes) -> bytes:
        amount = orjson.loads(data)["amount"]

        async def give_back(bb: BranchBarrier) -> None:
            await adjust(bb, 1, amount)

        async def take(bb: BranchBarrier) -> None:
            await adjust(bb, 1, -amount)

        await wf.new_branch().on_rollback(give_back).do(take)
        if app.state.interrupt:
            app.state.interrupt = False
            raise Ongoing("waiting for something")
        if app.state.xa_pg:
            await wf.new_branch().xa(xa_connect, lambda conn: log_transfer(conn, wf.gid, amount))
        await wf.new_branch().post(f"http://127.0.0.1:{port}/api/TransIn", data)
        return b"transferred"

    # The server calls this URL to resume an unfinished workflow.
    app.add_api_route("/workflow/resume", starlette_endpoint(workflows), methods=["GET", "POST"])
    return workflows


@asynccontextmanager
async def xa_connect() -> AsyncIterator[asyncpg.Connection]:
    """A connection for the XA step (asyncpg is always in autocommit mode)."""
    conn = await asyncpg.connect(app.state.xa_pg, server_settings={"search_path": XA_SCHEMA})
    try:
        yield conn
    finally:
        await conn.close()


async def log_transfer(conn: asyncpg.Connection, gid: str, amount: int) -> None:
    """The XA step's work: one row in the log, inside the step's XA transaction."""
    await conn.execute("INSERT INTO transfer_log (gid, amount) VALUES ($1, $2)", gid, amount)
    if app.state.xa_refuse:
        raise Failure("the transfer log refused")


async def setup_xa(dsn: str) -> None:
    """Create the log table and the barrier table in their schema."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {XA_SCHEMA}")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {XA_SCHEMA}.transfer_log "
                           "(gid VARCHAR(128) PRIMARY KEY, amount INT NOT NULL)")
        await ensure_table(conn, f"{XA_SCHEMA}.{BARRIER_TABLE}")
    finally:
        await conn.close()


async def logged(dsn: str, gid: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            f"SELECT count(*) FROM {XA_SCHEMA}.transfer_log WHERE gid = $1", gid))
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8082, help="port of this service")
    parser.add_argument("--db", default=os.path.join(tempfile.gettempdir(), "dtmx_wf.db"))
    parser.add_argument("--amount", type=int, default=30)
    parser.add_argument("--refuse-in", action="store_true", help="TransIn answers FAILURE")
    parser.add_argument("--interrupt", action="store_true", help="stop after step 1 once")
    parser.add_argument("--xa-pg", default="", help="PostgreSQL DSN: add the XA step")
    parser.add_argument("--xa-refuse", action="store_true", help="the XA step refuses")
    args = parser.parse_args()
    app.state.db, app.state.refuse_in = args.db, args.refuse_in
    app.state.interrupt = args.interrupt
    app.state.xa_pg, app.state.xa_refuse = args.xa_pg, args.xa_refuse
    await setup_db(args.db, BARRIER_TABLE)
    if args.xa_pg:
        await setup_xa(args.xa_pg)
    workflows = make_workflows(args.port)

    async with serving(app, args.port):
        print("balances before:", await balances(args.db))
        gid = await client.new_gid()
        try:
            result = await workflows.execute("transfer", gid, {"amount": args.amount})
            print(f"workflow {gid}: succeeded ({result.decode()})")
        except Failure as e:
            print(f"workflow {gid}: rolled back ({e.message})")
        except Ongoing:
            print(f"workflow {gid}: not finished, the server resumes it")
            print(f"workflow {gid}: {await wait_finished(client, gid, None)} after resume")
        print("balances after:", await balances(args.db))
        if args.xa_pg:
            print("transfer log rows:", await logged(args.xa_pg, gid))
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
