"""A TCC transaction with the sub-transaction barrier, in a FastAPI service on SQLite.

Two accounts live in one SQLite file; `frozen` is money held by a transfer in flight. The
client runs `amount` from account 1 to account 2 as two TCC branches:

    branch   try (client calls it)         confirm (server)          cancel (server)
    TransOut balance -= n, frozen += n     frozen -= n               balance += n, frozen -= n
    TransIn  frozen += n                   frozen -= n, balance += n frozen -= n

If every try succeeds, the server confirms both branches; if one fails, the client aborts
and the server cancels both. Each branch does its SQL inside `BranchBarrier.call`, so the
cancel of a try that never committed is skipped, and a try arriving after its cancel does
nothing.

Run it from the repository root, with a dtmx server in another terminal:

    .venv/bin/dtmx serve                                    # HTTP :36789
    .venv/bin/python examples/fastapi_tcc.py                # 1=100 2=100 -> 1=70 2=130
    .venv/bin/python examples/fastapi_tcc.py --refuse-in    # TransIn's try refuses: 1=100 2=100

The script starts the service on --port (default 8082), resets both accounts to 100 (nothing
frozen), runs one TCC through the server at $DTMX_SERVER (default
http://127.0.0.1:36789/api/dtmsvr) and prints the balances before and after.
"""

import argparse
import asyncio
import os
import tempfile

import aiosqlite
from fastapi import FastAPI, Request
from pydantic import BaseModel

from dtmx.client import DtmClient, Failure
from dtmx.client.barrier import BranchBarrier, ensure_table
from dtmx.client.starlette import dtm_endpoint

from _common import serving, wait_finished  # plumbing: examples/_common.py

DTMX_SERVER = os.environ.get("DTMX_SERVER", "http://127.0.0.1:36789/api/dtmsvr")
# In the same SQLite file as the accounts: barrier row and business commit together.
BARRIER_TABLE = "barrier"

app = FastAPI()


class Transfer(BaseModel):
    """The payload of every branch: which account, how much."""

    user_id: int
    amount: int


async def update_account(request: Request, sql: str, *params: int) -> None:
    """Run one UPDATE of an account at most once for this branch call, behind the barrier.

    An UPDATE that matches no row (no such account, or not enough money) raises `Failure`,
    which rolls the local transaction back and makes the branch answer 409 FAILURE.
    """

    async def business(conn: aiosqlite.Connection) -> None:
        cur = await conn.execute(sql, params)
        if cur.rowcount != 1:
            raise Failure("insufficient balance or no such account")

    barrier = BranchBarrier.from_query(request.query_params, table=BARRIER_TABLE)
    async with aiosqlite.connect(app.state.db) as conn:
        await barrier.call(conn, business)


@app.post("/api/TransOutTry")
@dtm_endpoint  # None -> 200 SUCCESS, Failure -> 409 FAILURE, Ongoing -> 425 ONGOING
async def trans_out_try(t: Transfer, request: Request) -> None:
    await update_account(
        request,
        "UPDATE account SET balance = balance - ?, frozen = frozen + ?"
        " WHERE user_id = ? AND balance >= ?",
        t.amount, t.amount, t.user_id, t.amount,
    )


@app.post("/api/TransOutConfirm")
@dtm_endpoint
async def trans_out_confirm(t: Transfer, request: Request) -> None:
    await update_account(
        request, "UPDATE account SET frozen = frozen - ? WHERE user_id = ?", t.amount, t.user_id
    )


@app.post("/api/TransOutCancel")
@dtm_endpoint
async def trans_out_cancel(t: Transfer, request: Request) -> None:
    await update_account(
        request,
        "UPDATE account SET balance = balance + ?, frozen = frozen - ? WHERE user_id = ?",
        t.amount, t.amount, t.user_id,
    )


@app.post("/api/TransInTry")
@dtm_endpoint
async def trans_in_try(t: Transfer, request: Request) -> None:
    if app.state.refuse_in:
        # The server will still call TransInCancel; the barrier skips it (this try never
        # committed), so account 2's frozen amount does not go below zero.
        raise Failure("TransIn refused")
    await update_account(
        request, "UPDATE account SET frozen = frozen + ? WHERE user_id = ?", t.amount, t.user_id
    )


@app.post("/api/TransInConfirm")
@dtm_endpoint
async def trans_in_confirm(t: Transfer, request: Request) -> None:
    await update_account(
        request,
        "UPDATE account SET balance = balance + ?, frozen = frozen - ? WHERE user_id = ?",
        t.amount, t.amount, t.user_id,
    )


@app.post("/api/TransInCancel")
@dtm_endpoint
async def trans_in_cancel(t: Transfer, request: Request) -> None:
    await update_account(
        request, "UPDATE account SET frozen = frozen - ? WHERE user_id = ?", t.amount, t.user_id
    )


async def setup_db(path: str) -> None:
    """Create the account and barrier tables; reset both accounts to 100, nothing frozen."""
    async with aiosqlite.connect(path) as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS account"
            " (user_id INTEGER PRIMARY KEY, balance INTEGER, frozen INTEGER)"
        )
        await conn.execute("INSERT OR REPLACE INTO account VALUES (1, 100, 0), (2, 100, 0)")
        await conn.commit()
        await ensure_table(conn, BARRIER_TABLE)


async def balances(path: str) -> str:
    async with aiosqlite.connect(path) as conn:
        rows = list(await conn.execute_fetchall("SELECT * FROM account ORDER BY user_id"))
    money = " ".join(f"{uid}={balance}" for uid, balance, _ in rows)
    frozen = " ".join(f"{uid}={frozen}" for uid, _, frozen in rows)
    return f"{money} (frozen: {frozen})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8082, help="port of this service")
    parser.add_argument("--db", default=os.path.join(tempfile.gettempdir(), "dtmx_tcc.db"))
    parser.add_argument("--amount", type=int, default=30)
    parser.add_argument("--refuse-in", action="store_true", help="TransIn's try answers FAILURE")
    args = parser.parse_args()
    app.state.db, app.state.refuse_in = args.db, args.refuse_in
    await setup_db(args.db)
    busi = f"http://127.0.0.1:{args.port}/api"

    async with serving(app, args.port), DtmClient(DTMX_SERVER) as dtm:
        print("balances before:", await balances(args.db))
        gid = await dtm.new_gid()
        try:
            # Enter: prepare. Normal exit: submit (the server confirms every branch).
            # An exception: abort (the server cancels every branch), then it is re-raised.
            async with dtm.tcc(gid) as tcc:
                await tcc.call_branch(
                    Transfer(user_id=1, amount=args.amount),
                    f"{busi}/TransOutTry", f"{busi}/TransOutConfirm", f"{busi}/TransOutCancel",
                )
                await tcc.call_branch(
                    Transfer(user_id=2, amount=args.amount),
                    f"{busi}/TransInTry", f"{busi}/TransInConfirm", f"{busi}/TransInCancel",
                )
        except Failure as e:
            print(f"tcc {gid}: a try failed, aborting ({e.message})")
        # Confirm and cancel run in the server after submit / abort: wait for them.
        print(f"tcc {gid}: {await wait_finished(dtm, gid, 30)}")
        print("balances after:", await balances(args.db))


if __name__ == "__main__":
    asyncio.run(main())
