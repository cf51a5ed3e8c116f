"""`python -m chaos --store sqlite --servers 2 --seconds 600 --seed N`: one chaos run.

Exits 0 when every invariant held, 1 on any violation, 2 if the run could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from chaos.procs import STORES
from chaos.report import render
from chaos.run import Config, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    p.add_argument("--store", choices=STORES, default="sqlite")
    p.add_argument("--servers", type=int, default=2, choices=(1, 2, 3))
    p.add_argument("--seconds", type=float, default=60.0, help="how long faults are injected")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=6, help="concurrent clients")
    p.add_argument("--branch-fault-rate", type=float, default=0.2)
    p.add_argument("--no-clock-jumps", action="store_true")
    p.add_argument("--kill-every", type=float, nargs=2, default=[1.0, 3.0],
                   metavar=("MIN", "MAX"), help="seconds between server kills")
    p.add_argument("--store-fault-every", type=float, nargs=2, default=[1.0, 2.5],
                   metavar=("MIN", "MAX"), help="seconds between store faults")
    p.add_argument("--quiesce-timeout", type=float, default=120.0)
    p.add_argument("--workdir", default="", help="run directory (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the run directory")
    a = p.parse_args(argv)
    cfg = Config(store=a.store, servers=a.servers, seconds=a.seconds, seed=a.seed,
                 workers=a.workers, branch_fault_rate=a.branch_fault_rate,
                 clock_jumps=not a.no_clock_jumps, kill_every=tuple(a.kill_every),
                 store_fault_every=tuple(a.store_fault_every),
                 quiesce_timeout=a.quiesce_timeout,
                 workdir=a.workdir, keep=a.keep)
    try:
        res = asyncio.run(run(cfg))
    except RuntimeError as e:
        print(f"chaos: could not run: {e}", file=sys.stderr)
        return 2
    print(render(res), flush=True)
    return 1 if res.findings.violations else 0


if __name__ == "__main__":
    sys.exit(main())
