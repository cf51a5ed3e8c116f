"""The embedded engine against DBOS: a 2-step saga of local functions, in one process.

Each transaction is two steps, each one small SQL write (an INSERT) in the application's
own database through the same driver (asyncpg on PostgreSQL, aiosqlite on SQLite):
- dtmx: `Embedded` on the store, the steps are `local://` functions, the saga is submitted
  with wait_result (the call returns when both steps ran and the result is stored);
- DBOS (PyPI `dbos`): the same two steps as `@DBOS.step`s of a `@DBOS.workflow`, awaited.
Same machine, same database server, same clients (N asyncio tasks, closed loop), same run;
each contender in a fresh process, whose CPU (process_time: every thread) is divided by the
transactions completed in the measured window.

    .venv/bin/python -m bench.embedded --stores postgres,sqlite --seconds 8 --clients 32

Writes bench/results/embedded-<store>.json; prints one JSON object per store.
State: PostgreSQL schemas `bench_embed` (dtmx store) and `bench_embed_app` (the app's
table) in database `postgres`, database `bench_embed_dbos` (DBOS), dropped first; SQLite
files in a temp directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PG = "postgresql://postgres@127.0.0.1:5432"
APP_SCHEMA = "bench_embed_app"
STORE_SCHEMA = "bench_embed"
DBOS_DB = "bench_embed_dbos"

Write = Callable[[str, str], Awaitable[None]]


async def _keep_session(_conn: object) -> None:
    """No session reset when a connection goes back to the pool."""


async def app_db(store: str, workdir: Path, db: str = "postgres", *, pool_reset: bool = True
                 ) -> tuple[Write, Callable[[], Awaitable[None]]]:
    """The application's database: one table, one INSERT per step (PostgreSQL: in the
    schema APP_SCHEMA of database `db`; without `pool_reset`, asyncpg's pool does not send
    its session reset, a round trip, each time a connection goes back)."""
    if store == "postgres":
        import asyncpg

        reset = {} if pool_reset else {"reset": _keep_session}
        pool = await asyncpg.create_pool(f"{PG}/{db}", min_size=4, max_size=16, **reset)
        await pool.execute(f"CREATE SCHEMA IF NOT EXISTS {APP_SCHEMA}")
        await pool.execute(f"CREATE TABLE IF NOT EXISTS {APP_SCHEMA}.effects "
                           "(gid TEXT NOT NULL, step TEXT NOT NULL)")

        async def pg_write(gid: str, step: str) -> None:
            await pool.execute(f"INSERT INTO {APP_SCHEMA}.effects VALUES ($1, $2)", gid, step)

        return pg_write, pool.close
    import aiosqlite

    conn = await aiosqlite.connect(workdir / "app.db")
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("CREATE TABLE IF NOT EXISTS effects (gid TEXT NOT NULL, step TEXT)")
    await conn.commit()

    async def sqlite_write(gid: str, step: str) -> None:
        await conn.execute("INSERT INTO effects VALUES (?, ?)", (gid, step))
        await conn.commit()

    return sqlite_write, conn.close


#: A CPU meter: cumulative CPU seconds by process id (read at the window's edges).
Meter = Callable[[], Mapping[int, float]]


def _meter_delta(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU seconds spent in the window: processes started inside it count from zero."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


async def closed_loop(one: Callable[[], Awaitable[None]], clients: int, warmup: float,
                      seconds: float, meters: Mapping[str, Meter] | None = None
                      ) -> dict[str, float]:
    """N clients, each one transaction in flight; counts and CPU inside the window only
    (this process's, and `<name>_cpu_ms_per_tx` of each meter); `total` counts every
    transaction completed, warm-up and drain included."""
    done = [0, 0]
    window: dict[str, float] = {}
    stop = asyncio.Event()
    lat: list[float] = []
    meters = meters or {}

    async def client() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            await one()
            done[1] += 1
            if "t0" in window and "t1" not in window:
                done[0] += 1
                lat.append(time.perf_counter() - t0)

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    await asyncio.sleep(warmup)
    at0 = {name: m() for name, m in meters.items()}
    window["t0"], window["cpu0"] = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    window["t1"], window["cpu1"] = time.perf_counter(), time.process_time()
    at1 = {name: m() for name, m in meters.items()}
    n = done[0]
    stop.set()
    await asyncio.gather(*tasks)
    lat.sort()
    el = window["t1"] - window["t0"]
    out = {"tx": n, "tps": n / el, "total": done[1],
           "cpu_ms_per_tx": 1000 * (window["cpu1"] - window["cpu0"]) / n,
           "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * 0.99)]}
    for name in meters:
        out[f"{name}_cpu_ms_per_tx"] = 1000 * _meter_delta(at0[name], at1[name]) / n
    return out


async def run_dtmx(store: str, workdir: Path, a: argparse.Namespace) -> dict[str, float]:
    from dtmx.embedded import Embedded, Functions, LocalBranch
    from dtmx.store_settings import StoreSettings

    write, close = await app_db(store, workdir)
    fns = Functions()

    @fns.local("step1")
    async def step1(b: LocalBranch) -> None:
        await write(b.gid, "step1")

    @fns.local("step2")
    async def step2(b: LocalBranch) -> None:
        await write(b.gid, "step2")

    st = (StoreSettings(Url=f"{PG}/postgres", Schema=STORE_SCHEMA) if store == "postgres"
          else StoreSettings(Url=f"sqlite:///{workdir / 'dtmx.db'}"))
    async with Embedded(st, functions=fns, pool_size=16) as dtm:
        client = dtm.client

        async def one() -> None:
            s = client.saga(await client.new_gid())
            s.add(step1.url, "", None).add(step2.url, "", None)
            s.wait_result = True
            await s.submit()

        out = await closed_loop(one, a.clients, a.warmup, a.seconds)
    await close()
    return out


async def dbos_loop(write: Write, url: str, a: argparse.Namespace,
                    meters: Mapping[str, Meter] | None = None) -> dict[str, float]:
    """The closed loop over DBOS's 2-step workflow (system database `url`): each step one
    `write`, as `@DBOS.step`s of an awaited `@DBOS.workflow`."""
    import uuid

    from dbos import DBOS, DBOSConfig, SetWorkflowID

    @DBOS.step()
    async def step(gid: str, name: str) -> None:
        await write(gid, name)

    @DBOS.workflow()
    async def saga(gid: str) -> None:
        await step(gid, "step1")
        await step(gid, "step2")

    config: DBOSConfig = {"name": "bench-embed", "system_database_url": url,
                          "log_level": "WARNING", "sys_db_pool_size": 40}
    DBOS(config=config)
    DBOS.launch()

    async def one() -> None:
        gid = uuid.uuid4().hex
        with SetWorkflowID(gid):
            await saga(gid)

    try:
        return await closed_loop(one, a.clients, a.warmup, a.seconds, meters)
    finally:
        DBOS.destroy()


async def run_dbos(store: str, workdir: Path, a: argparse.Namespace) -> dict[str, float]:
    write, close = await app_db(store, workdir)
    url = (f"{PG}/{DBOS_DB}" if store == "postgres"
           else f"sqlite:///{workdir / 'dbos.sqlite'}")
    try:
        return await dbos_loop(write, url, a)
    finally:
        await close()


def reset(store: str) -> None:
    if store != "postgres":
        return
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {STORE_SCHEMA} CASCADE")
        c.execute(f"DROP SCHEMA IF EXISTS {APP_SCHEMA} CASCADE")
        c.execute(f"DROP DATABASE IF EXISTS {DBOS_DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DBOS_DB}")


def contender(a: argparse.Namespace) -> None:
    workdir = Path(a.workdir)
    run = run_dtmx if a.contender == "dtmx" else run_dbos
    if a.contender == "dtmx":
        import uvloop  # as the server runs

        uvloop.install()
    print(json.dumps(asyncio.run(run(a.store, workdir, a))), flush=True)


def loop_args(p: argparse.ArgumentParser) -> None:
    """The options of a closed-loop comparison: the contender process's own
    (--contender, --workdir) and the load's."""
    p.add_argument("--contender", default="")
    p.add_argument("--workdir", default="")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--rounds", type=int, default=2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--stores", default="postgres,sqlite")
    p.add_argument("--store", default="")
    loop_args(p)
    a = p.parse_args()
    if a.contender:
        contender(a)
        return
    for store in a.stores.split(","):
        out: dict[str, Any] = {"scenario": "embedded-saga2", "store": store,
                               "clients": a.clients, "seconds": a.seconds,
                               "loadavg_start": os.getloadavg()[0],
                               "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        rounds = []
        for _ in range(a.rounds):  # interleaved, so a change of the machine's load hits both
            one_round: dict[str, Any] = {}
            for who in ("dtmx", "dbos"):
                reset(store)
                with tempfile.TemporaryDirectory(prefix="bench-embed-") as wd:
                    r = subprocess.run(
                        [sys.executable, "-m", "bench.embedded", "--contender", who,
                         "--store", store, "--workdir", wd, "--clients", str(a.clients),
                         "--seconds", str(a.seconds), "--warmup", str(a.warmup)],
                        cwd=HERE.parent, capture_output=True, text=True, timeout=300)
                if r.returncode != 0:
                    raise SystemExit(f"{who} on {store} failed:\n{r.stderr[-3000:]}")
                one_round[who] = json.loads(r.stdout.strip().splitlines()[-1])
            one_round["tps_ratio"] = one_round["dtmx"]["tps"] / one_round["dbos"]["tps"]
            one_round["cpu_ratio"] = (one_round["dtmx"]["cpu_ms_per_tx"]
                                      / one_round["dbos"]["cpu_ms_per_tx"])
            rounds.append(one_round)
        out["rounds"] = rounds
        out["loadavg_end"] = os.getloadavg()[0]
        (HERE / "results" / f"embedded-{store}.json").write_text(json.dumps(out, indent=1))
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
