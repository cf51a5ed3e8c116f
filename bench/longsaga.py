"""Work per saga step independent of the saga's length (issue 10).

One saga of N empty steps (default 1,000), submitted with `wait_result` so the submit
answers when the last action ran, against 500 sequential direct calls to the same branch
handler by the same client (aiohttp, one keep-alive session), in one run. Target: the saga
takes under 1.5x the 500 direct calls. A 2-step saga's time per step is printed alongside.

    python -m bench.longsaga --store sqlite [--steps 1000] [--rounds 3]

Prints one JSON object on its last line. Traffic goes to 127.0.0.1 only; the processes it
starts are stopped by their pids.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import STORES, Branches, DtmxServer, reset_store, server_conf


def _saga(gid: str, base: str, steps: int) -> dict[str, Any]:
    return {
        "gid": gid, "trans_type": "saga", "wait_result": True,
        "steps": [{"action": f"{base}/b/a", "compensate": f"{base}/b/c"}] * steps,
        "payloads": ["{}"] * steps,
    }


async def _measure(dtm: str, base: str, steps: int, direct_calls: int, rounds: int
                   ) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async def direct() -> float:
            start = time.perf_counter()
            for _ in range(direct_calls):
                async with s.post(f"{base}/b/a", data=b"{}") as r:
                    await r.read()
                    assert r.status == 200
            return time.perf_counter() - start

        async def saga(n: int) -> float:
            start = time.perf_counter()
            async with s.post(f"{dtm}/submit", json=_saga(uuid.uuid4().hex, base, n)) as r:
                body = await r.read()
                assert r.status == 200, body
            return time.perf_counter() - start

        await direct()  # warm up both paths
        await saga(2)
        out: dict[str, list[float]] = {"direct": [], "saga": [], "saga2": []}
        for _ in range(rounds):
            out["direct"].append(await direct())
            out["saga"].append(await saga(steps))
            out["saga2"].append(await saga(2))
    d, sg, s2 = (statistics.median(out[k]) for k in ("direct", "saga", "saga2"))
    return {
        "steps": steps, "direct_calls": direct_calls, "rounds": rounds,
        "direct_s": round(d, 3), "saga_s": round(sg, 3),
        "ratio": round(sg / d, 3),
        "saga_ms_per_step": round(sg / steps * 1000, 3),
        "saga2_ms_per_step": round(s2 / 2 * 1000, 3),
        "direct_ms_per_call": round(d / direct_calls * 1000, 3),
        "all": {k: [round(x, 3) for x in v] for k, v in out.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.longsaga", description=__doc__)
    p.add_argument("--store", choices=STORES, default="sqlite")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--direct-calls", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-longsaga-"))
    reset_store(a.store)
    branches = Branches(workdir)
    server = None
    try:
        server = DtmxServer(server_conf(a.store, workdir, Limits={"MaxBranches": a.steps}),
                            workdir)
        result = asyncio.run(_measure(server.url, branches.base, a.steps, a.direct_calls,
                                      a.rounds))
    finally:
        if server is not None:
            server.stop()
        branches.stop()
    result["store"] = a.store
    print(json.dumps(result))


if __name__ == "__main__":
    main()
