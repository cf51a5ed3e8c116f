"""A two-phase message: a local SQLite transaction, then guaranteed delivery of TransIn.

Account 1 is debited in a local transaction of this process; the dtmx server then delivers
TransIn (credit account 2) and retries it until it succeeds. `msg.do_and_submit` ties the
two together: it prepares the msg, runs the local transaction through the barrier, then
submits. If this process dies between its commit and the submit, the server asks the
QueryPrepared endpoint whether the local transaction committed, and delivers the msg if it
did (try it with --skip-submit). If the local transaction refuses (--amount above the
balance), the msg is aborted and nothing is delivered.

Run it from the repository root, with a dtmx server in another terminal:

    .venv/bin/dtmx serve                                  # HTTP :36789
    .venv/bin/python examples/msg.py                      # 1=100 2=100 -> 1=70 2=130
    .venv/bin/python examples/msg.py --amount 500         # local refusal: 1=100 2=100
    .venv/bin/python examples/msg.py --skip-submit        # server asks QueryPrepared: 1=70 2=130

The script starts the service on --port (default 8083), resets both balances to 100, runs
one msg through the server at $DTMX_SERVER (default http://127.0.0.1:36789/api/dtmsvr) and
prints the balances before and after. --skip-submit takes a few seconds: the server checks
a prepared msg only after its timeout_to_fail (1 s here) and its next poll.
"""

import argparse
import asyncio
import os
import tempfile

import aiosqlite
from fastapi import FastAPI, Request
from pydantic import BaseModel

from dtmx.client import DtmClient, Failure
from dtmx.client.barrier import BranchBarrier
from dtmx.client.starlette import dtm_endpoint

from _common import balances, serving, setup_db, wait_finished  # plumbing: examples/_common.py

DTMX_SERVER = os.environ.get("DTMX_SERVER", "http://127.0.0.1:36789/api/dtmsvr")
# In the same SQLite file as the accounts: barrier row and business commit together.
BARRIER_TABLE = "barrier"

app = FastAPI()


class Transfer(BaseModel):
    """The payload of TransIn: which account, how much."""

    user_id: int
    amount: int


async def adjust_balance(conn: aiosqlite.Connection, user_id: int, delta: int) -> None:
    """Add `delta` to an account; raise `Failure` if the balance would go below zero."""
    cur = await conn.execute(
        "UPDATE account SET balance = balance + ? WHERE user_id = ? AND balance + ? >= 0",
        (delta, user_id, delta),
    )
    if cur.rowcount != 1:
        raise Failure(f"account {user_id}: insufficient balance")


@app.post("/api/TransIn")
@dtm_endpoint  # None -> 200 SUCCESS, Failure -> 409 FAILURE, Ongoing -> 425 ONGOING
async def trans_in(t: Transfer, request: Request) -> None:
    # The server may deliver twice (a retry after a lost answer): the barrier credits once.
    barrier = BranchBarrier.from_query(request.query_params, table=BARRIER_TABLE)
    async with aiosqlite.connect(app.state.db) as conn:
        await barrier.call(conn, lambda c: adjust_balance(c, t.user_id, t.amount))


@app.get("/api/QueryPrepared")
@dtm_endpoint
async def query_prepared(request: Request) -> None:
    # 200 if the local transaction committed, 409 FAILURE if not. Once this has answered,
    # a local transaction still in flight can no longer commit (it gets `Duplicated`).
    barrier = BranchBarrier.from_query(request.query_params, table=BARRIER_TABLE)
    async with aiosqlite.connect(app.state.db) as conn:
        await barrier.query_prepared(conn)


async def debit_locally(barrier: BranchBarrier, user_id: int, amount: int) -> None:
    """The local transaction: debit `user_id`, with the msg's barrier row, in one commit."""
    async with aiosqlite.connect(app.state.db) as conn:
        await barrier.call(conn, lambda c: adjust_balance(c, user_id, -amount))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8083, help="port of this service")
    parser.add_argument("--db", default=os.path.join(tempfile.gettempdir(), "dtmx_msg.db"))
    parser.add_argument("--amount", type=int, default=30)
    parser.add_argument(
        "--skip-submit", action="store_true", help="commit locally but never submit (a crash)"
    )
    args = parser.parse_args()
    app.state.db = args.db
    await setup_db(args.db, BARRIER_TABLE)
    busi = f"http://127.0.0.1:{args.port}/api"

    async with serving(app, args.port), DtmClient(DTMX_SERVER) as dtm:
        print("balances before:", await balances(args.db))
        msg = dtm.msg(await dtm.new_gid()).add(
            f"{busi}/TransIn", Transfer(user_id=2, amount=args.amount)
        )
        if args.skip_submit:
            # What do_and_submit does, minus the submit: as if we crashed right after the
            # commit. The server asks QueryPrepared once timeout_to_fail has passed.
            msg.timeout_to_fail = 1
            await msg.prepare(f"{busi}/QueryPrepared")
            barrier = BranchBarrier(trans_type="msg", gid=msg.gid, branch_id="00", op="msg",
                                    table=BARRIER_TABLE)
            await debit_locally(barrier, 1, args.amount)
            print(f"msg {msg.gid}: committed locally, not submitted")
        else:
            try:
                await msg.do_and_submit(
                    f"{busi}/QueryPrepared",
                    lambda b: debit_locally(b, 1, args.amount),
                    barrier_table=BARRIER_TABLE,
                )
                print(f"msg {msg.gid}: committed locally and submitted")
            except Failure as e:
                print(f"msg {msg.gid}: local transaction refused, msg aborted ({e.message})")
        print(f"msg {msg.gid}: {await wait_finished(dtm, msg.gid, 60)}")
        print("balances after:", await balances(args.db))


if __name__ == "__main__":
    asyncio.run(main())
