"""Shrinking a failing schedule: fewer transactions, crashes, nodes and faults, as long as
the run still fails (any violation). Greedy, one removal at a time, to a fixed point."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields, replace

from sim.config import Config
from sim.net import Faults
from sim.world import run


def _smaller(c: Config) -> Iterator[Config]:
    for i in range(len(c.txs)):
        yield replace(c, txs=c.txs[:i] + c.txs[i + 1:])
    for i in range(len(c.crashes)):
        yield replace(c, crashes=c.crashes[:i] + c.crashes[i + 1:])
    if c.nodes > 1:
        yield replace(c, nodes=c.nodes - 1, crashes=[k for k in c.crashes if k.node < c.nodes - 1])
    if any(c.skews):
        yield replace(c, skews=[])
    if c.jumps:
        yield replace(c, jumps=[])
    if c.presend:  # still failing without: not a matter of calls sent ahead
        yield replace(c, presend=0.0)
    if c.fast_net:
        yield replace(c, fast_net=False)
    if c.stalls > 0.03:
        yield replace(c, stalls=0.03)
    for i in range(len(c.outages)):
        yield replace(c, outages=c.outages[:i] + c.outages[i + 1:])
    for f in fields(Faults):
        if getattr(c.faults, f.name):
            yield replace(c, faults=replace(c.faults, **{f.name: 0.0}))
    for i, t in enumerate(c.txs):
        if t.force_stop_at >= 0:
            yield replace(c, txs=[*c.txs[:i], replace(t, force_stop_at=-1.0), *c.txs[i + 1:]])
    for i, t in enumerate(c.txs):
        if t.calm:
            yield replace(c, txs=[*c.txs[:i], replace(t, calm=False), *c.txs[i + 1:]])
    for i, t in enumerate(c.txs):
        if t.steps > 1:
            fewer = replace(t, steps=t.steps - 1, failing=tuple(s for s in t.failing
                                                                 if s < t.steps - 1))
            yield replace(c, txs=[*c.txs[:i], fewer, *c.txs[i + 1:]])


def shrink(config: Config, budget: int = 300) -> Config:
    """The smallest config found (within `budget` runs) that still fails."""
    current = config
    progress = True
    while progress and budget > 0:
        progress = False
        for candidate in _smaller(current):
            budget -= 1
            if run(candidate).violations:
                current = candidate
                progress = True
                break
            if budget <= 0:
                break
    return current
