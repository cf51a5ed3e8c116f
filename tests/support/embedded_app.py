"""An application process with the embedded engine, for the crash tests.

It offers two local functions, `step1` and `step2`, each a barrier-guarded insert into the
application's own SQLite database (table `effects`), so a test can count every effect.
With `--submit N` it submits N two-step sagas and prints `ACK <gid>` once each submit
returned (the transaction is then durable); `--slow S` makes step2 take S seconds, so a
kill -9 lands mid-saga. It runs until killed.

    python -m tests.support.embedded_app --store-url sqlite:///x.db --app-db app.db
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import aiosqlite

from dtmx.embedded import Embedded, Functions, LocalBranch
from dtmx.store_settings import StoreSettings

SCHEMA = "CREATE TABLE IF NOT EXISTS effects (gid TEXT NOT NULL, step TEXT NOT NULL)"


def functions(app_db: str, slow: float) -> Functions:
    fns = Functions()

    def db() -> Any:
        return aiosqlite.connect(app_db, timeout=10)

    @fns.local("step1", db=db, table="barrier")
    async def step1(b: LocalBranch, conn: aiosqlite.Connection) -> None:
        await conn.execute("INSERT INTO effects VALUES (?, 'step1')", (b.gid,))

    @fns.local("step2", db=db, table="barrier")
    async def step2(b: LocalBranch, conn: aiosqlite.Connection) -> None:
        if slow:
            await asyncio.sleep(slow)
        await conn.execute("INSERT INTO effects VALUES (?, 'step2')", (b.gid,))

    return fns


async def main(a: argparse.Namespace) -> None:
    async with aiosqlite.connect(a.app_db, timeout=10) as conn:
        await conn.execute(SCHEMA)
        await conn.commit()
    store = StoreSettings(Url=a.store_url, Schema=a.schema, RedisPrefix=a.prefix)
    async with Embedded(store, functions=functions(a.app_db, a.slow), poll_interval=0.05,
                        retry_interval=0.2, lease=a.lease, request_timeout=a.lease / 4,
                        heartbeat_interval=1.0, pool_size=4) as dtm:
        print("READY", flush=True)
        for _ in range(a.submit):
            gid = await dtm.client.new_gid()
            await dtm.client.saga(gid).add("local://step1", "", {}).add(
                "local://step2", "", {}).submit()
            print("ACK", gid, flush=True)
        await asyncio.Event().wait()


def run() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store-url", required=True)
    p.add_argument("--schema", default="public")
    p.add_argument("--prefix", default="{a}")
    p.add_argument("--app-db", required=True)
    p.add_argument("--submit", type=int, default=0)
    p.add_argument("--slow", type=float, default=0.0)
    p.add_argument("--lease", type=float, default=1.0)
    asyncio.run(main(p.parse_args(sys.argv[1:])))


if __name__ == "__main__":
    run()
