"""dtmx's workflow SDK against DBOS: a 2-step workflow on the same PostgreSQL (issue 15).

One workflow is two steps, each one INSERT into the application's own table (asyncpg,
`bench.embedded.app_db`, the write DBOS's steps make too):
- `dtmx`: the workflow SDK over the embedded engine (`Embedded.workflows()`): a registered
  ``async def`` whose two `wf.new_branch().do(step)` are recorded steps; `execute` returns
  once the outcome is submitted (every step result is stored before);
- `dbos`: DBOS 3.4 (PyPI `dbos`), the same two steps as `@DBOS.step`s of a
  `@DBOS.workflow`, awaited (as bench.embedded's DBOS contender);
- `serve`: the same dtmx workflow in an application process against a `dtmx serve` on
  the same PostgreSQL (its CPU is the application's plus the server's).
Same clients (N asyncio tasks, closed loop, `bench.embedded.closed_loop`), same database
server, each contender a fresh process, contenders interleaved in each round. Measured:
workflows/s and latency in the window, CPU per workflow of the contender's process (all
threads), of the server (serve), of the PostgreSQL backends serving the contender's
databases (`pg`) and of every PostgreSQL process (`pg_all`: other clients of the shared
server count too), and from pg_stat_database over the whole run (warm-up, start-up and
drain included) the transactions committed (read-only ones too: asyncpg's pool resets a
connection on release) and rows written per workflow, and the transaction ids taken on
the whole server (`xids`: one per writing transaction; other clients' count too).

    flock /tmp/dtmx-bench.lock .venv/bin/python -m bench.workflow --seconds 8 --rounds 2

`--no-pool-reset`: the application's asyncpg pool (both contenders) does not send asyncpg's
session reset when a connection goes back (a round trip per write otherwise).

Writes bench/results/workflow2-postgres.json. State: databases bench_wf_dtmx (dtmx's store),
bench_wf_app (the application's table), bench_wf_dbos (DBOS), dropped first.
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
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import procs
from bench.embedded import PG, Meter, Write, app_db, closed_loop, dbos_loop, loop_args

if TYPE_CHECKING:
    from dtmx.client.workflow import Workflows

HERE = Path(__file__).resolve().parent
DTMX_DB, APP_DB, DBOS_DB = "bench_wf_dtmx", "bench_wf_app", "bench_wf_dbos"
CONTENDERS = ("dtmx", "dbos", "serve")
NAME = "wf2"


def _register(wfs: Workflows, write: Write) -> None:
    """The 2-step workflow on a `Workflows`."""
    from dtmx.client.workflow import Workflow

    @wfs.register(NAME)
    async def wf2(wf: Workflow, _data: bytes) -> None:
        async def step1(_bb: object) -> None:
            await write(wf.gid, "step1")

        async def step2(_bb: object) -> None:
            await write(wf.gid, "step2")

        await wf.new_branch().do(step1)
        await wf.new_branch().do(step2)


def _pg_meters(*dbs: str) -> dict[str, Meter]:
    return {"pg": lambda: procs.pg_backends_cpu(dbs),
            "pg_all": lambda: procs.store_server_cpus("postgres")}


async def run_dtmx(a: argparse.Namespace) -> dict[str, Any]:
    from dtmx.embedded import Embedded
    from dtmx.store_settings import StoreSettings

    write, close = await app_db("postgres", Path(a.workdir), APP_DB, pool_reset=a.pool_reset)
    async with Embedded(StoreSettings(Url=f"{PG}/{DTMX_DB}"), pool_size=16) as dtm:
        wfs = dtm.workflows()
        _register(wfs, write)

        async def one() -> None:
            await wfs.execute(NAME, uuid.uuid4().hex, b"")

        out = await closed_loop(one, a.clients, a.warmup, a.seconds,
                                _pg_meters(DTMX_DB, APP_DB))
        assert dtm.store is not None
        out["store_roundtrips_per_wf"] = getattr(dtm.store, "roundtrips", 0) / out["total"]
    await close()
    return out


async def run_serve(a: argparse.Namespace) -> dict[str, Any]:
    from aiohttp import web

    from dtmx.client import DtmClient
    from dtmx.client.workflow import Workflows, aiohttp_handler

    wd = Path(a.workdir)
    conf = procs.server_conf("postgres", wd)
    conf["Store"]["Db"] = DTMX_DB
    server = procs.DtmxServer(conf, wd)
    try:
        write, close = await app_db("postgres", wd, APP_DB, pool_reset=a.pool_reset)
        port = procs.free_port()
        async with DtmClient(server.url) as client:
            wfs = Workflows(client, callback=f"http://127.0.0.1:{port}/resume")
            _register(wfs, write)
            app = web.Application()
            app.router.add_route("*", "/resume", aiohttp_handler(wfs))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()

            async def one() -> None:
                await wfs.execute(NAME, uuid.uuid4().hex, b"")

            meters = {**_pg_meters(DTMX_DB, APP_DB),
                      "server": lambda: {server.pid: server.cpu()}}
            out = await closed_loop(one, a.clients, a.warmup, a.seconds, meters)
            await runner.cleanup()
        await close()
    finally:
        server.stop()
    out["app_cpu_ms_per_tx"] = out["cpu_ms_per_tx"]
    out["cpu_ms_per_tx"] += out["server_cpu_ms_per_tx"]  # the application and the server
    return out


async def run_dbos(a: argparse.Namespace) -> dict[str, Any]:
    write, close = await app_db("postgres", Path(a.workdir), APP_DB, pool_reset=a.pool_reset)
    try:
        return await dbos_loop(write, f"{PG}/{DBOS_DB}", a, _pg_meters(DBOS_DB, APP_DB))
    finally:
        await close()


def reset() -> None:
    """Fresh, empty databases for the next contender."""
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as c:
        for db in (DTMX_DB, APP_DB, DBOS_DB):
            c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            c.execute(f"CREATE DATABASE {db}")


def contender(a: argparse.Namespace) -> None:
    if a.contender != "dbos":
        import uvloop  # as the server runs

        uvloop.install()
    run = {"dtmx": run_dtmx, "serve": run_serve, "dbos": run_dbos}[a.contender]
    print(json.dumps(asyncio.run(run(a))), flush=True)


def one_phase(who: str, a: argparse.Namespace) -> dict[str, Any]:
    """Run one contender in a fresh process on fresh databases; add its database counts."""
    reset()
    before = procs.pg_db_stats((DTMX_DB, APP_DB, DBOS_DB))
    with tempfile.TemporaryDirectory(prefix="bench-wf-") as wd:
        r = subprocess.run(
            [sys.executable, "-m", "bench.workflow", "--contender", who, "--workdir", wd,
             "--clients", str(a.clients), "--seconds", str(a.seconds),
             "--warmup", str(a.warmup), *([] if a.pool_reset else ["--no-pool-reset"])],
            cwd=HERE.parent, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"{who} failed:\n{r.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    time.sleep(1.0)  # backends report their counts as they exit
    after = procs.pg_db_stats((DTMX_DB, APP_DB, DBOS_DB))
    for k in procs.PG_COUNTS:
        out[f"{k}_per_wf"] = (after[k] - before[k]) / out["total"]
    out["rows_written_per_wf"] = sum(out[f"{k}_per_wf"] for k in
                                     ("tup_inserted", "tup_updated", "tup_deleted"))
    out["loadavg"] = os.getloadavg()[0]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    loop_args(p)
    p.add_argument("--no-pool-reset", dest="pool_reset", action="store_false",
                   help="the application's asyncpg pool does not reset the connections it "
                        "takes back (asyncpg's default does: one more round trip per write)")
    p.add_argument("--scenario", default="workflow2", help="the name in the JSON")
    p.add_argument("--out", default=str(HERE / "results" / "workflow2-postgres.json"))
    a = p.parse_args()
    if a.contender:
        contender(a)
        return
    out: dict[str, Any] = {"scenario": a.scenario, "store": "postgres", "clients": a.clients,
                           "seconds": a.seconds, "app_pool_reset": a.pool_reset,
                           "loadavg_start": os.getloadavg()[0],
                           "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    rounds = []
    for _ in range(a.rounds):  # interleaved, so a change of the machine's load hits all
        one_round = {who: one_phase(who, a) for who in a.contenders.split(",")}
        base = one_round.get("dbos")
        for who, r in one_round.items():
            if base is not None and who != "dbos":
                r["tps_ratio"] = r["tps"] / base["tps"]
                r["cpu_ratio"] = r["cpu_ms_per_tx"] / base["cpu_ms_per_tx"]
        rounds.append(one_round)
        print(json.dumps(one_round), flush=True)
    out["rounds"] = rounds
    out["loadavg_end"] = os.getloadavg()[0]
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
