"""The HTTP-stack comparison (issue 10): saga2 with each API server and each branch client.

`python -m bench.http_stacks --stores sqlite,redis --rounds 2 --seconds 6`

One run, side by side: for each store, `rounds` rounds, each starting every variant in
turn as its own server process (bench/stack_server.py) against the same branch process
and the same closed-loop clients, so noise shows as the spread between rounds. Per
variant: completed sagas per second and the server process's CPU ms per saga. Prints one
JSON object per measurement and a summary table (markdown) at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.load import Waiter, run_phase
from bench.procs import Branches, Proc, reset_store, server_conf, workdir
from bench.targets import HttpTarget, sample_check

# (api server, branch client)
VARIANTS = [
    ("own", "own"),
    ("uvicorn", "own"),
    ("granian-asgi", "own"),
    ("granian-rsgi", "own"),
    ("own", "aiohttp"),
    ("own", "httpx"),
]


class StackServer(Proc):
    def __init__(self, conf: dict[str, Any], wd: Path, api: str, client: str) -> None:
        self.conf = conf
        path = wd / f"stack-{api}-{client}.yml"
        path.write_text(yaml.safe_dump(conf))
        super().__init__([sys.executable, "-m", "bench.stack_server", str(path), "--api", api,
                          "--client", client], wd, f"stack-{api}-{client}",
                         env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        self.wait_http(f"{self.url}/version")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.conf['HttpPort']}/api/dtmsvr"


async def measure(store: str, rounds: int, clients: int, seconds: float, warmup: float
                  ) -> list[dict[str, Any]]:
    wd = workdir()
    reset_store(store)
    br = Branches(wd)
    out = []
    try:
        conn = aiohttp.TCPConnector(limit=clients * 4 + 8)
        async with aiohttp.ClientSession(connector=conn) as s, Waiter(s, br.base) as waiter:
            for rnd in range(rounds):
                for api, client in VARIANTS:
                    srv = StackServer(server_conf(store, wd), wd, api, client)
                    try:
                        target = HttpTarget("saga2", s, br.base, [srv.url], waiter)
                        res = await run_phase(target.dtmx, clients=clients, seconds=seconds,
                                              warmup=warmup, cpu_of=srv.cpu)
                        check = await sample_check(s, srv.url, waiter.completed[-2000:], n=10)
                    finally:
                        srv.stop()
                    row = {"store": store, "round": rnd, "api": api, "client": client,
                           "tps": round(res.tps, 1), "cpu_ms_per_saga": res.cpu_ms_per_tx,
                           "p50_ms": res.p50_ms, "errors": res.errors, "check": check}
                    print(json.dumps(row), flush=True)
                    out.append(row)
    finally:
        br.stop()
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per store and variant, each round's tps and CPU, and the median vs own."""
    lines = ["| store | API server | branch client | saga/s per round | median | vs own "
             "| CPU ms/saga per round | median | vs own |", "|" + "---|" * 9]
    for store in sorted({r["store"] for r in rows}):
        mine = [r for r in rows if r["store"] == store]

        def med(api: str, client: str, key: str, rs: list[dict[str, Any]] = mine) -> float:
            return statistics.median(r[key] for r in rs if (r["api"], r["client"]) == (api, client)
                                     and r[key] is not None)

        own_tps, own_cpu = med("own", "own", "tps"), med("own", "own", "cpu_ms_per_saga")
        for api, client in VARIANTS:
            rs = [r for r in mine if (r["api"], r["client"]) == (api, client)]
            tps = med(api, client, "tps")
            cpu = med(api, client, "cpu_ms_per_saga")
            cpus = ", ".join(f"{r['cpu_ms_per_saga']:.2f}" for r in rs)
            lines.append(
                f"| {store} | {api} | {client} | {', '.join(str(r['tps']) for r in rs)} "
                f"| {tps:.0f} | {tps / own_tps - 1:+.0%} "
                f"| {cpus} | {cpu:.2f} "
                f"| {cpu / own_cpu - 1:+.0%} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.http_stacks", description=__doc__)
    p.add_argument("--stores", default="sqlite,redis")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--warmup", type=float, default=1.5)
    a = p.parse_args()
    import uvloop

    rows: list[dict[str, Any]] = []
    for store in a.stores.split(","):
        rows += uvloop.run(measure(store, a.rounds, a.clients, a.seconds, a.warmup))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
