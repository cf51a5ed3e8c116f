"""`python -m bench <scenario> --store S --clients N --seconds T` | `python -m bench all`.

A single run prints one JSON object on its last line. `all` runs every scenario on every
store (each in a fresh process), saves bench/results/<scenario>-<store>.json, and
regenerates bench/REPORT.md and bench/throughput.png. `report` only regenerates them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bench.procs import STORES
from bench.targets import SCENARIOS

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ALL_SCENARIOS = (*SCENARIOS, "floor", "scale", "dbos")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=(*ALL_SCENARIOS, "all", "report"))
    p.add_argument("--store", choices=STORES, default="sqlite")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0, help="measured window per phase")
    p.add_argument("--baseline-seconds", type=float, default=None,
                   help="window of the direct baseline (default: --seconds)")
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--save", action="store_true",
                   help="also write bench/results/<scenario>-<store>.json")
    p.add_argument("--profile", default="",
                   help="py-spy the server during the dtmx phase into this file "
                        "(.svg: flame graph, else collapsed stacks)")
    p.add_argument("--stores", default=",".join(STORES), help="for all: stores to run")
    p.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                   help="for all: scenarios to run")
    return p


def _run(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    if os.environ.get("BENCH_NO_UVLOOP"):
        return asyncio.run(coro)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def one(a: argparse.Namespace) -> dict[str, Any]:
    from bench import run

    base = a.baseline_seconds or a.seconds
    if a.scenario in SCENARIOS:
        return _run(run.standard(a.scenario, a.store, a.clients, a.seconds, base, a.warmup,
                                 a.profile))
    if a.scenario == "scale":
        return _run(run.scale(a.store, a.clients, a.seconds, a.warmup))
    if a.scenario == "floor":
        return _run(run.floor(a.store, a.clients, a.seconds, a.warmup))
    # DBOS's async workflows want the standard asyncio loop in their process; ours may be
    # uvloop, it talks to DBOS over HTTP only.
    return _run(run.dbos(a.clients, a.seconds, base, a.warmup))


def run_all(a: argparse.Namespace) -> int:
    RESULTS.mkdir(exist_ok=True)
    stores = [s for s in a.stores.split(",") if s]
    failures = 0
    for sc in [s for s in a.scenarios.split(",") if s]:
        for st in (["postgres"] if sc == "dbos" else stores):
            cmd = [sys.executable, "-m", "bench", sc, "--store", st, "--clients",
                   str(a.clients), "--seconds", str(a.seconds), "--warmup", str(a.warmup),
                   "--save"]
            if a.baseline_seconds:
                cmd += ["--baseline-seconds", str(a.baseline_seconds)]
            print(f"# {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            budget = 4 * a.seconds + 4 * a.warmup + 120  # a run always ends
            try:
                p = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True,
                                   timeout=budget)
                last = (p.stdout.strip().splitlines() or ["{}"])[-1]
                ok = p.returncode == 0
            except subprocess.TimeoutExpired:
                last, ok = "{}", False
            if not ok:
                failures += 1
                err = p.stderr[-1500:] if "p" in locals() else "timeout"
                print(f"#   FAILED ({time.monotonic() - t0:.0f}s): {err}", file=sys.stderr)
                _save({"scenario": sc, "store": st, "error": err[-400:]})
                continue
            print(last, flush=True)
    from bench.report import write_report

    write_report(a)
    return 1 if failures else 0


def _save(d: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{d['scenario']}-{d['store']}.json").write_text(json.dumps(d, indent=1) + "\n")


def main() -> int:
    a = _parser().parse_args()
    if a.scenario == "all":
        return run_all(a)
    if a.scenario == "report":
        from bench.report import write_report

        write_report(None)
        return 0
    out = one(a)
    if a.save:
        _save(out)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
