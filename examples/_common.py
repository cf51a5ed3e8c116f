"""What the FastAPI examples share, so that each of them shows only its transaction.

Not an example itself: the SQLite accounts every example starts from (two accounts of 100),
printing them, serving a FastAPI app inside the example's own event loop, and waiting for
the server to finish a transaction. The examples import it by its module name, which works
because Python puts the script's folder (examples/) first on the import path.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosqlite
import uvicorn
from fastapi import FastAPI

from dtmx.client import DtmClient
from dtmx.client.barrier import ensure_table


async def setup_db(path: str, barrier_table: str) -> None:
    """Create the account and barrier tables; reset both accounts to 100."""
    async with aiosqlite.connect(path) as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS account (user_id INTEGER PRIMARY KEY, balance INTEGER)"
        )
        await conn.execute("INSERT OR REPLACE INTO account VALUES (1, 100), (2, 100)")
        await conn.commit()
        await ensure_table(conn, barrier_table)  # CREATE TABLE IF NOT EXISTS barrier(...)


async def balances(path: str) -> str:
    """The balances as `1=100 2=100`."""
    async with aiosqlite.connect(path) as conn:
        rows = await conn.execute_fetchall("SELECT user_id, balance FROM account ORDER BY 1")
    return " ".join(f"{uid}={bal}" for uid, bal in rows)


@asynccontextmanager
async def serving(app: FastAPI, port: int) -> AsyncIterator[None]:
    """Run the FastAPI app with uvicorn in this event loop while the block runs."""
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def wait_finished(dtm: DtmClient, gid: str, seconds: float | None) -> str:
    """Poll the server until transaction `gid` has finished (at most `seconds`, None for no
    limit); its final status."""
    async with asyncio.timeout(seconds):
        while True:
            state = await dtm.query(gid)
            if state is not None and state.finished:
                return str(state.status)
            await asyncio.sleep(0.1)
