"""A saga with the sub-transaction barrier, in a FastAPI service on SQLite.

Two accounts live in one SQLite file. The saga takes `amount` from account 1 (TransOut) and
gives it to account 2 (TransIn). If a step refuses, the dtmx server compensates what ran
(TransOutRevert, TransInRevert). Each branch does its SQL inside `BranchBarrier.call`, so a
retried or duplicated request, a compensation that arrives for an action that never ran, and
an action that arrives after its compensation all leave the balances right.

Run it from the repository root, with a dtmx server in another terminal:

    .venv/bin/dtmx serve                                     # HTTP :36789
    .venv/bin/python examples/fastapi_saga.py                # 1=100 2=100 -> 1=70 2=130
    .venv/bin/python examples/fastapi_saga.py --refuse-in    # TransIn refuses: 1=100 2=100

The script starts the service on --port (default 8081), resets both balances to 100, submits
one saga through the server at $DTMX_SERVER (default http://127.0.0.1:36789/api/dtmsvr) and
prints the balances before and after. The server must be able to reach 127.0.0.1:--port.
"""

import argparse
import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable

import aiosqlite
from fastapi import FastAPI, Request
from pydantic import BaseModel

from dtmx.client import DtmClient, Failure
from dtmx.client.barrier import BranchBarrier
from dtmx.client.starlette import dtm_endpoint

from _common import balances, serving, setup_db  # plumbing: examples/_common.py

DTMX_SERVER = os.environ.get("DTMX_SERVER", "http://127.0.0.1:36789/api/dtmsvr")
# The barrier table sits in the same SQLite file as the accounts, so the barrier row and the
# balance change commit in one local transaction.
BARRIER_TABLE = "barrier"

app = FastAPI()


class Transfer(BaseModel):
    """The payload of every branch: which account, how much."""

    user_id: int
    amount: int


async def adjust_balance(conn: aiosqlite.Connection, user_id: int, delta: int) -> None:
    """Add `delta` to an account; raising `Failure` makes the branch answer 409 FAILURE."""
    cur = await conn.execute(
        "UPDATE account SET balance = balance + ? WHERE user_id = ? AND balance + ? >= 0",
        (delta, user_id, delta),
    )
    if cur.rowcount != 1:
        raise Failure(f"account {user_id}: insufficient balance")


async def in_barrier(
    request: Request, business: Callable[[aiosqlite.Connection], Awaitable[None]]
) -> None:
    """Run `business` at most once for this branch call, in a local transaction."""
    barrier = BranchBarrier.from_query(request.query_params, table=BARRIER_TABLE)
    async with aiosqlite.connect(app.state.db) as conn:
        await barrier.call(conn, business)


@app.post("/api/TransOut")
@dtm_endpoint  # None -> 200 SUCCESS, Failure -> 409 FAILURE, Ongoing -> 425 ONGOING
async def trans_out(t: Transfer, request: Request) -> None:
    await in_barrier(request, lambda conn: adjust_balance(conn, t.user_id, -t.amount))


@app.post("/api/TransOutRevert")
@dtm_endpoint
async def trans_out_revert(t: Transfer, request: Request) -> None:
    await in_barrier(request, lambda conn: adjust_balance(conn, t.user_id, t.amount))


@app.post("/api/TransIn")
@dtm_endpoint
async def trans_in(t: Transfer, request: Request) -> None:
    if app.state.refuse_in:
        # The server will call TransInRevert anyway; the barrier sees that TransIn never
        # committed and skips it, so account 2 does not lose money it never received.
        raise Failure("TransIn refused")
    await in_barrier(request, lambda conn: adjust_balance(conn, t.user_id, t.amount))


@app.post("/api/TransInRevert")
@dtm_endpoint
async def trans_in_revert(t: Transfer, request: Request) -> None:
    await in_barrier(request, lambda conn: adjust_balance(conn, t.user_id, -t.amount))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081, help="port of this service")
    parser.add_argument("--db", default=os.path.join(tempfile.gettempdir(), "dtmx_saga.db"))
    parser.add_argument("--amount", type=int, default=30)
    parser.add_argument("--refuse-in", action="store_true", help="TransIn answers FAILURE")
    args = parser.parse_args()
    app.state.db, app.state.refuse_in = args.db, args.refuse_in
    await setup_db(args.db, BARRIER_TABLE)
    busi = f"http://127.0.0.1:{args.port}/api"

    async with serving(app, args.port), DtmClient(DTMX_SERVER) as dtm:
        print("balances before:", await balances(args.db))
        out, into = Transfer(user_id=1, amount=args.amount), Transfer(user_id=2, amount=args.amount)
        saga = (
            dtm.saga(await dtm.new_gid())
            .add(f"{busi}/TransOut", f"{busi}/TransOutRevert", out)
            .add(f"{busi}/TransIn", f"{busi}/TransInRevert", into)
        )
        saga.wait_result = True  # submit() returns when the saga has finished
        try:
            await saga.submit()
            print(f"saga {saga.gid}: succeeded")
        except Failure as e:
            print(f"saga {saga.gid}: rolled back ({e.message})")
        print("balances after:", await balances(args.db))


if __name__ == "__main__":
    asyncio.run(main())
