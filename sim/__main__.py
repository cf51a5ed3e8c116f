"""`python -m sim --seeds N`: explore N seeds; a failing one is shrunk and printed with the
command that replays it.

    python -m sim --seeds 10000 [--start S] [--jobs 2]
    python -m sim --seed 1234 [--trace]          # one seed (its full trace with --trace)
    python -m sim --replay '<config json>'       # a shrunk schedule, as printed
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time

from sim.config import Config
from sim.shrink import shrink
from sim.world import Result, run


def _one(seed: int) -> tuple[int, list[str]]:
    return seed, run(Config.generate(seed)).violations


def report(res: Result, show_trace: bool) -> None:
    print(f"seed {res.config.seed}: {len(res.violations)} violation(s), trace {res.digest}, "
          f"virtual end {res.end:.1f} s")
    for v in res.violations[:20]:
        print("  " + v)
    if show_trace:
        print("\n".join(res.trace))


def explain(seed: int, show_trace: bool) -> None:
    small = shrink(Config.generate(seed))
    res = run(small)
    print(f"minimal replay of seed {seed} ({len(small.txs)} transactions, "
          f"{len(small.crashes)} crashes, {small.nodes} nodes):")
    report(res, show_trace)
    print(f"reproduce: python -m sim --seed {seed}")
    print(f"replay:    python -m sim --replay '{small.to_json()}' --trace")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=0, help="explore this many seeds")
    ap.add_argument("--start", type=int, default=0, help="first seed to explore")
    ap.add_argument("--jobs", type=int, default=multiprocessing.cpu_count())
    ap.add_argument("--seed", type=int, help="run one seed")
    ap.add_argument("--replay", help="run a config printed by a failing exploration")
    ap.add_argument("--trace", action="store_true", help="print the trace")
    args = ap.parse_args(argv)
    logging.disable(logging.CRITICAL)
    if args.replay:
        res = run(Config.from_json(args.replay))
        report(res, args.trace)
        return 1 if res.violations else 0
    if args.seed is not None:
        res = run(Config.generate(args.seed))
        report(res, args.trace)
        if res.violations:
            explain(args.seed, False)
        return 1 if res.violations else 0
    seeds = range(args.start, args.start + args.seeds)
    t0 = time.monotonic()
    failed: list[int] = []
    with multiprocessing.Pool(args.jobs) as pool:
        for seed, violations in pool.imap_unordered(_one, seeds, chunksize=16):
            if violations:
                failed.append(seed)
                print(f"seed {seed} FAILED: {violations[0]}", flush=True)
    dt = time.monotonic() - t0
    print(f"{len(seeds)} seeds in {dt:.1f} s ({len(seeds) / dt * 60:.0f} seeds/minute, "
          f"{args.jobs} jobs): {len(failed)} failed")
    if failed:
        explain(min(failed), False)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
