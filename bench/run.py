"""One benchmark run per scenario and store; each returns the dict printed as its JSON line."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import aiohttp
import requests

from bench import inproc
from bench.load import PhaseResult, Waiter, run_phase
from bench.procs import (
    DBOS_DB,
    Branches,
    DtmxServer,
    Proc,
    free_port,
    reset_store,
    server_conf,
    store_server_cpu,
    workdir,
)
from bench.targets import DIRECT_CALLS, GrpcTarget, HttpTarget, sample_check


def _session(clients: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients * 4 + 8))


def _store_cpu_of(store: str) -> Callable[[], float] | None:
    """The database server's CPU, for the stores that run as a server."""
    if store not in ("postgres", "mysql", "redis"):
        return None
    return lambda: store_server_cpu(store)


def _roundtrips(srv: DtmxServer) -> float:
    """The served store's round trip counter (its /api/metrics), under load: with batched
    writes several transactions share one round trip, which the sequential in-process
    count never shows."""
    text = requests.get(f"http://127.0.0.1:{srv.conf['HttpPort']}/api/metrics", timeout=5).text
    m = re.search(r"^dtmx_store_roundtrips_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _base(scenario: str, store: str, clients: int, seconds: float) -> dict[str, Any]:
    return {"scenario": scenario, "store": store, "clients": clients, "seconds": seconds,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": os.getloadavg()[0]}


def _phase(prefix: str, p: PhaseResult) -> dict[str, Any]:
    d = asdict(p)
    d.pop("extra")
    return {f"{prefix}{k}": (_r(v) if isinstance(v, float) else v) for k, v in d.items()}


def _make_target(scenario: str, session: aiohttp.ClientSession, br: Branches,
                 http: list[str], grpc: list[str], waiter: Waiter) -> Any:
    if scenario == "saga2-grpc":
        return GrpcTarget(br.grpc_target, grpc, waiter, http[0])
    return HttpTarget(scenario, session, br.base, http, waiter)


async def standard(scenario: str, store: str, clients: int, seconds: float,
                   baseline_seconds: float, warmup: float,
                   profile: str = "") -> dict[str, Any]:
    """saga2, saga2-wait, msg1, tcc2, saga2-grpc: direct baseline, then dtmx, same run."""
    wd = workdir()
    reset_store(store)
    br = Branches(wd, grpc=scenario == "saga2-grpc")
    conf = server_conf(store, wd)
    out = _base(scenario, store, clients, seconds)
    try:
        async with _session(clients) as s, Waiter(s, br.base) as waiter:
            def make_one(http: str, grpc: str) -> Any:
                return _make_target(scenario, s, br, [http], [grpc], waiter).dtmx

            out["store_roundtrips_per_tx"] = _r(
                await inproc.count_roundtrips(server_conf(store, wd), wd, make_one))
            srv = DtmxServer(conf, wd)
            try:
                target = _make_target(scenario, s, br, [srv.url], [srv.grpc_target], waiter)
                direct = await run_phase(target.direct, clients=clients,
                                         seconds=baseline_seconds, warmup=min(1.0, warmup))
                spy = _py_spy(srv.pid, profile, warmup + seconds) if profile else None
                res = await run_phase(target.dtmx, clients=clients, seconds=seconds,
                                      warmup=warmup, cpu_of=srv.cpu,
                                      store_cpu_of=_store_cpu_of(store),
                                      roundtrips_of=lambda: _roundtrips(srv))
                if spy is not None:
                    spy.wait(30)
                out["check"] = await sample_check(s, srv.url, waiter.completed[-5000:])
                if isinstance(target, GrpcTarget):
                    await target.close()
            finally:
                srv.stop()
    finally:
        br.stop()
    out.update(tps=_r(res.tps, 1), baseline_tps=_r(direct.tps, 1),
               ratio=_ratio(res.tps, direct.tps), cpu_ms_per_tx=res.cpu_ms_per_tx,
               store_cpu_ms_per_tx=_r(res.store_cpu_ms_per_tx),
               loaded_roundtrips_per_tx=_r(res.roundtrips_per_tx),
               p50_ms=res.p50_ms, p99_ms=res.p99_ms,
               baseline_p50_ms=direct.p50_ms, baseline_p99_ms=direct.p99_ms,
               direct_calls_per_tx=DIRECT_CALLS[scenario])
    out.update(_phase("dtmx_", res))
    out.update(_phase("direct_", direct))
    out["cpu_ms_per_tx"] = _r(out["cpu_ms_per_tx"])
    return out


async def scale(store: str, clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    """saga2 against one server process, then against two on the same store (clients split)."""
    wd = workdir()
    reset_store(store)
    br = Branches(wd)
    out = _base("scale", store, clients, seconds)
    servers: list[DtmxServer] = []
    try:
        async with _session(clients) as s, Waiter(s, br.base) as waiter:
            servers.append(DtmxServer(server_conf(store, wd), wd, "dtmx1"))
            t1 = HttpTarget("saga2", s, br.base, [servers[0].url], waiter)
            one = await run_phase(t1.dtmx, clients=clients, seconds=seconds, warmup=warmup,
                                  cpu_of=servers[0].cpu)
            servers.append(DtmxServer(server_conf(store, wd), wd, "dtmx2"))
            t2 = HttpTarget("saga2", s, br.base, [x.url for x in servers], waiter)
            two = await run_phase(t2.dtmx, clients=clients, seconds=seconds, warmup=warmup,
                                  cpu_of=lambda: sum(x.cpu() for x in servers))
            out["check"] = await sample_check(s, servers[0].url, waiter.completed[-5000:])
    finally:
        for x in servers:
            x.stop()
        br.stop()
    increase = None
    if one.cpu_ms_per_tx and two.cpu_ms_per_tx:
        increase = round((two.cpu_ms_per_tx / one.cpu_ms_per_tx - 1) * 100, 1)
    out.update(tps=_r(two.tps, 1), baseline_tps=_r(one.tps, 1), ratio=_ratio(two.tps, one.tps),
               cpu_ms_per_tx=_r(two.cpu_ms_per_tx), cpu_ms_per_tx_1proc=_r(one.cpu_ms_per_tx),
               cpu_increase_pct=increase, store_roundtrips_per_tx=None,
               p50_ms=two.p50_ms, p99_ms=two.p99_ms, baseline="1 server process")
    out.update(_phase("one_", one))
    out.update(_phase("two_", two))
    return out


async def floor(store: str, clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    """The store's own rate for a 2-step saga's writes, next to saga2 through dtmx."""
    wd = workdir()
    reset_store(store)
    out = _base("floor", store, clients, seconds)
    # the schema first, as a dtmx server creates it
    from dtmx.settings import Settings
    from dtmx.store_settings import StoreSettings
    from dtmx.stores import make_store

    st = make_store(Settings(Store=StoreSettings(**server_conf(store, wd)["Store"])))
    await st.open()
    await st.close()
    res, rts = await inproc.store_floor(server_conf(store, wd), clients=clients,
                                        seconds=seconds, warmup=warmup)
    out.update(tps=_r(res.tps, 1), baseline_tps=None, ratio=None,
               cpu_ms_per_tx=res.cpu_ms_per_tx and _r(res.cpu_ms_per_tx),
               store_roundtrips_per_tx=_r(rts), p50_ms=res.p50_ms, p99_ms=res.p99_ms,
               note="in-process store verbs only (create + 2 CAS updates per saga); "
                    "cpu is the bench process's (store layer + driver)")
    out.update(_phase("floor_", res))
    return out


async def dbos(clients: int, seconds: float, baseline_seconds: float,
               warmup: float) -> dict[str, Any]:
    """DBOS workflow vs dtmx saga2-wait (postgres store) vs direct, same run, same clients."""
    try:
        from importlib.metadata import version

        import dbos as dbos_pkg  # noqa: F401

        dbos_version = version("dbos")
    except ImportError:
        return {**_base("dbos", "postgres", clients, seconds), "tps": None,
                "baseline_tps": None, "ratio": None, "cpu_ms_per_tx": None,
                "store_roundtrips_per_tx": None, "p50_ms": None, "p99_ms": None,
                "error": "dbos is not installed (pip install dbos)"}
    wd = workdir()
    store = "postgres"
    reset_store(store)
    _reset_dbos_db()
    br = Branches(wd)
    out = _base("dbos", store, clients, seconds)
    out["dbos_version"] = dbos_version
    port = free_port()
    app = Proc([sys.executable, "-m", "bench.dbos_app", "--port", str(port), "--branches",
                br.base, "--db-url", f"postgresql://postgres@127.0.0.1:5432/{DBOS_DB}"],
               wd, "dbos", env={"PYTHONPATH": str(os.path.dirname(os.path.dirname(__file__)))})
    srv: DtmxServer | None = None
    try:
        app.wait_http(f"http://127.0.0.1:{port}/stats", timeout=60)
        async with _session(clients) as s, Waiter(s, br.base) as waiter:
            srv = DtmxServer(server_conf(store, wd), wd)
            target = HttpTarget("saga2-wait", s, br.base, [srv.url], waiter)
            direct = await run_phase(target.direct, clients=clients, seconds=baseline_seconds,
                                     warmup=min(1.0, warmup))
            dt = await run_phase(target.dtmx, clients=clients, seconds=seconds, warmup=warmup,
                                 cpu_of=srv.cpu)

            async def wf(_i: int) -> float:
                from bench.targets import new_gid

                async with s.post(f"http://127.0.0.1:{port}/saga",
                                  params={"gid": new_gid()}) as r:
                    body = await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"dbos {r.status} {body[:200]!r}")
                return time.monotonic()

            sql0 = await _dbos_sql(s, port)
            db = await run_phase(wf, clients=clients, seconds=seconds, warmup=warmup,
                                 cpu_of=app.cpu)
            sql1 = await _dbos_sql(s, port)
    finally:
        if srv:
            srv.stop()
        app.stop()
        br.stop()
    started = db.extra["total"]  # statements were counted over the whole phase
    out.update(tps=_r(db.tps, 1), baseline_tps=_r(direct.tps, 1),
               ratio=_ratio(db.tps, direct.tps), cpu_ms_per_tx=_r(db.cpu_ms_per_tx),
               store_roundtrips_per_tx=None, p50_ms=db.p50_ms, p99_ms=db.p99_ms,
               dbos_sql_statements_per_tx=_r((sql1[0] - sql0[0]) / max(1, started), 1),
               dbos_commits_per_tx=_r((sql1[1] - sql0[1]) / max(1, started), 1),
               dtmx_tps=_r(dt.tps, 1), dtmx_ratio=_ratio(dt.tps, direct.tps),
               dtmx_over_dbos=_ratio(dt.tps, db.tps), dtmx_cpu_ms_per_tx=_r(dt.cpu_ms_per_tx),
               dtmx_p50_ms=dt.p50_ms, dtmx_p99_ms=dt.p99_ms,
               baseline_p50_ms=direct.p50_ms, baseline_p99_ms=direct.p99_ms)
    out.update(_phase("dbos_", db))
    return out


async def _dbos_sql(s: aiohttp.ClientSession, port: int) -> tuple[int, int]:
    async with s.get(f"http://127.0.0.1:{port}/stats") as r:
        d = await r.json()
    return int(d["sql_statements"]), int(d["commits"])


def _py_spy(pid: int, path: str, seconds: float) -> subprocess.Popen[bytes]:
    """Sample the server with py-spy during the dtmx phase (raw collapsed stacks or svg)."""
    fmt = "flamegraph" if path.endswith(".svg") else "raw"
    spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return subprocess.Popen([spy, "record", "--pid", str(pid), "-d", str(int(seconds)),
                             "-r", "100", "--format", fmt, "-o", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _reset_dbos_db() -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres",
                         autocommit=True) as conn, contextlib.suppress(psycopg.Error):
        conn.execute(f'DROP DATABASE IF EXISTS "{DBOS_DB}" WITH (FORCE)')
