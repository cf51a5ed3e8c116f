"""saga2 on a 3-master Redis Cluster against one Redis, same run, same cores (issue 17).

    .venv/bin/python -m bench.cluster --seconds 8 --rounds 2

Starts its own redis-servers on free loopback ports (one plain, three in cluster mode; see
tests/support/redis_cluster.py) and stops them. Phases, interleaved per round:
- served saga2 (closed loop, completion = the 2nd action ran, as bench.run) with one `dtmx
  serve` on one Redis, one on the cluster, and two servers on the cluster (clients split);
- the store floor (a 2-step saga's writes in process: create + 2 compare-and-set updates)
  on one Redis and on the cluster with our RESP client, and on the cluster with redis-py's
  asyncio RedisCluster doing the same script calls (the hand-written-client rule: ours stays
  only if it beats the maintained library by more than 10%), at 32 callers and at 4.
CPU: dtmx process(es) and redis-server process(es) from /proc at the window's edges.
Prints one JSON object per phase and a summary on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.load import Waiter, run_phase
from bench.procs import Branches, DtmxServer, cpu_seconds, free_port, self_cpu
from bench.run import _make_target, _session
from bench.targets import sample_check
from tests.support.redis_cluster import RedisCluster


def _single_redis(root: Path) -> tuple[int, int]:
    port = free_port()
    subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--daemonize", "yes", "--dir", str(root),
                    "--pidfile", str(root / "single.pid")], check=True, capture_output=True)
    for _ in range(100):
        if (root / "single.pid").exists():
            break
        time.sleep(0.05)
    time.sleep(0.2)
    return port, int((root / "single.pid").read_text())


def _pids(cluster: RedisCluster) -> list[int]:
    return [int(p.read_text()) for p in cluster.root.glob("*/redis.pid")]


def _redis_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


async def served(name: str, url: str, redis_pids: list[int], servers: int, clients: int,
                 seconds: float, warmup: float, wd: Path) -> dict[str, Any]:
    br = Branches(wd)
    prefix = "{bench-" + name + "-" + os.urandom(3).hex() + "}"
    procs = []
    try:
        for i in range(servers):
            conf = {"Store": {"Driver": "redis", "Url": url, "RedisPrefix": prefix},
                    "HttpPort": free_port(), "GrpcPort": free_port(), "Host": "127.0.0.1",
                    "LogLevel": "warn"}
            procs.append(DtmxServer(conf, wd, f"{name}{i}"))
        samples: list[float] = []

        def cpu() -> float:
            samples.append(_redis_cpu(redis_pids))
            return sum(p.cpu() for p in procs)

        async with _session(clients) as s, Waiter(s, br.base) as waiter:
            target = _make_target("saga2", s, br, [p.url for p in procs],
                                  [p.grpc_target for p in procs], waiter)
            res = await run_phase(target.dtmx, clients=clients, seconds=seconds,
                                  warmup=warmup, cpu_of=cpu)
            check = await sample_check(s, procs[0].url, waiter.completed[-2000:])
    finally:
        for p in procs:
            p.stop()
        br.stop()
    n = max(1, res.count)
    return {"phase": f"saga2-{name}", "tps": round(res.tps, 1), "servers": servers,
            "dtmx_cpu_ms_per_tx": res.cpu_ms_per_tx,
            "redis_cpu_ms_per_tx": round((samples[-1] - samples[0]) * 1000 / n, 3),
            "p50_ms": res.p50_ms, "p99_ms": res.p99_ms, "errors": res.errors, "check": check}


class _RedisPyCluster:
    """redis-py's asyncio RedisCluster behind the store's `execute(*args, key=...)`."""

    def __init__(self, port: int) -> None:
        from redis.asyncio.cluster import RedisCluster as PyCluster

        # one connection per concurrent caller (its pool checks one out per command)
        self.rc = PyCluster(host="127.0.0.1", port=port, max_connections=256)

    async def execute(self, *args: Any, key: str = "") -> Any:
        return await self.rc.execute_command(*args)

    async def close(self) -> None:
        await self.rc.aclose()


async def floor(name: str, url: str, redis_pids: list[int], clients: int, seconds: float,
                warmup: float, redis_py_port: int = 0) -> dict[str, Any]:
    from dtmx.core.models import BranchUpdate, Change, Op, Status, Transaction, TransType
    from dtmx.core.saga import gen_branches
    from dtmx.stores.redis_store import RedisStore

    store = RedisStore(url, prefix="{bench-floor-" + os.urandom(3).hex() + "}")
    await store.open()
    if redis_py_port:
        await store._client.close()
        store._client = _RedisPyCluster(redis_py_port)  # type: ignore[assignment]
    steps = [{"action": "http://127.0.0.1:1/a1", "compensate": "http://127.0.0.1:1/c1"},
             {"action": "http://127.0.0.1:1/a2", "compensate": "http://127.0.0.1:1/c2"}]
    payloads = [b'{"amount":30}', b'{"amount":30}']
    seq = [0]

    async def one(i: int) -> float:
        seq[0] += 1
        gid = f"floor-{i}-{seq[0]}-{time.monotonic_ns()}"
        now = time.time()
        owner = f"bench:{i}"
        t = Transaction(gid=gid, trans_type=TransType.SAGA, status=Status.SUBMITTED,
                        create_time=now, update_time=now, owner=owner,
                        next_cron_interval=10.0, next_cron_time=now + 30)
        await store.create(trans=t, branches=gen_branches(gid, steps, payloads, now))
        for bid, final in (("01", None), ("02", Status.SUCCEED)):
            ok = await store.update(
                gid=gid, now=now, expect_status=Status.SUBMITTED, expect_owner=owner,
                change=Change(status=final, branches=(BranchUpdate(bid, Op.ACTION,
                                                                   Status.SUCCEED),)))
            if not ok:
                raise RuntimeError(f"floor update refused for {gid}")
        return time.monotonic()

    samples: list[float] = []

    def cpu() -> float:
        samples.append(_redis_cpu(redis_pids))
        return self_cpu()

    try:
        res = await run_phase(one, clients=clients, seconds=seconds, warmup=warmup, cpu_of=cpu)
    finally:
        await store.close()
    n = max(1, res.count)
    return {"phase": f"floor-{name}", "tps": round(res.tps, 1),
            "client_cpu_ms_per_tx": res.cpu_ms_per_tx,
            "redis_cpu_ms_per_tx": round((samples[-1] - samples[0]) * 1000 / n, 3),
            "errors": res.errors, "first_error": res.first_error[:200]}


async def main(a: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="dtmx-bench-cluster-"))
    port, single_pid = _single_redis(root)
    cluster = RedisCluster(3).start()
    one_url = f"redis://127.0.0.1:{port}/0"
    pids = _pids(cluster)
    out: list[dict[str, Any]] = []
    try:
        for r in range(a.rounds):
            phases = [
                served("one", one_url, [single_pid], 1, a.clients, a.seconds, a.warmup, root),
                served("cluster", cluster.url, pids, 1, a.clients, a.seconds, a.warmup, root),
                served("cluster2", cluster.url, pids, 2, a.clients, a.seconds, a.warmup, root),
                floor("one", one_url, [single_pid], a.clients, a.seconds, a.warmup),
                floor("cluster", cluster.url, pids, a.clients, a.seconds, a.warmup),
                floor("cluster-redispy", cluster.url, pids, a.clients, a.seconds, a.warmup,
                      redis_py_port=cluster.ports[0]),
                # a concurrency at which redis-py's cluster client works, for its CPU
                floor("cluster-c4", cluster.url, pids, 4, a.seconds, a.warmup),
                floor("cluster-redispy-c4", cluster.url, pids, 4, a.seconds, a.warmup,
                      redis_py_port=cluster.ports[0]),
            ]
            for ph in phases:
                got = await ph
                got["round"] = r
                print(json.dumps(got), flush=True)
                out.append(got)
    finally:
        cluster.stop()
        os.kill(single_pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
    best: dict[str, float] = {}
    for o in out:
        best[o["phase"]] = max(best.get(o["phase"], 0.0), o["tps"])
    summary = {**best,
               "cluster_over_one": round(best["saga2-cluster"] / best["saga2-one"], 3),
               "cluster2_over_one": round(best["saga2-cluster2"] / best["saga2-one"], 3),
               "floor_ours_over_redispy": round(best["floor-cluster"]
                                                / best["floor-cluster-redispy"], 3),
               "floor_c4_ours_over_redispy": round(best["floor-cluster-c4"]
                                                   / best["floor-cluster-redispy-c4"], 3)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.cluster")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--rounds", type=int, default=2)
    raise SystemExit(asyncio.run(main(p.parse_args())))
