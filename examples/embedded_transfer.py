"""A money transfer as a saga inside one Python process: no dtmx server to run.

The engine runs in this program's asyncio loop on a SQLite file (`--store`); the two saga
steps are local functions writing to the application's own SQLite database (`--db`), each
inside the sub-transaction barrier, so a retried or late call never applies twice. The
first transfer succeeds; the second asks for more than account 1 holds, so its credit
refuses and the debit is compensated.

    python examples/embedded_transfer.py            # temp files, prints balances and gids
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

import aiosqlite

from dtmx.embedded import Embedded, Failure, LocalBranch, SagaFlow, TransactionFailed

transfer = SagaFlow("transfer")
DB = Path(tempfile.gettempdir()) / "dtmx-embedded-example.db"


def app_db() -> Any:
    """A connection to the application's database (the barrier's table lives there too)."""
    return aiosqlite.connect(DB, timeout=10)


async def refund(b: LocalBranch, conn: aiosqlite.Connection) -> None:
    """Compensation of `debit`: put the amount back."""
    data = b.json()
    await conn.execute("UPDATE account SET balance = balance + ? WHERE id = ?",
                       (data["amount"], data["from"]))


@transfer.step(compensate=refund, db=app_db, table="barrier")
async def debit(b: LocalBranch, conn: aiosqlite.Connection) -> None:
    """Take the amount from the payer."""
    data = b.json()
    await conn.execute("UPDATE account SET balance = balance - ? WHERE id = ?",
                       (data["amount"], data["from"]))


@transfer.step(db=app_db, table="barrier")
async def credit(b: LocalBranch, conn: aiosqlite.Connection) -> None:
    """Give it to the payee, unless the payer could not afford it (then roll back)."""
    data = b.json()
    async with conn.execute("SELECT balance FROM account WHERE id = ?", (data["from"],)) as c:
        row = await c.fetchone()
    if row is None or row[0] < 0:
        raise Failure(f"account {data['from']} cannot pay {data['amount']}")
    await conn.execute("UPDATE account SET balance = balance + ? WHERE id = ?",
                       (data["amount"], data["to"]))


async def balances() -> str:
    async with app_db() as conn, conn.execute("SELECT id, balance FROM account ORDER BY id") as c:
        return " ".join(f"{i}={b}" for i, b in await c.fetchall())


async def main(store: str) -> None:
    async with app_db() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY,"
                           " balance INTEGER NOT NULL)")
        await conn.execute("INSERT OR REPLACE INTO account VALUES (1, 100), (2, 0)")
        await conn.commit()
    print("balances before:", await balances())
    async with Embedded(f"sqlite:///{store}", retry_interval=1) as dtm:
        gid = await transfer.run(dtm.client, {"from": 1, "to": 2, "amount": 30})
        print(f"saga {gid}: {(await dtm.client.query(gid)).status}")  # type: ignore[union-attr]
        try:
            await transfer.run(dtm.client, {"from": 1, "to": 2, "amount": 500})
        except TransactionFailed as e:
            state = await dtm.client.query(e.gid or "")
            print(f"saga {e.gid}: {state.status if state else '?'} ({e.message})")
    print("balances after:", await balances())


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default=str(Path(tempfile.mkdtemp()) / "dtmx.db"))
    p.add_argument("--db", default=str(DB))
    args = p.parse_args()
    DB = Path(args.db)
    asyncio.run(main(args.store))
