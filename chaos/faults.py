"""Seeded fault decisions: the same seed gives the same schedule and the same branch faults.

Branch faults are a pure function of (seed, gid, branch, op, n-th call of that op), so a
retried call can get a different fault than its first attempt, and a rerun with the same
seed gives each call the same fault again. Process and store faults are a timed schedule
drawn up front from the seed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from enum import StrEnum


class BranchFault(StrEnum):
    """What the bank does to one branch call."""

    NONE = "none"
    ERROR = "error_500"  # 500 before any effect
    ONGOING = "ongoing_425"  # "try again later", before any effect
    SLOW = "slow"  # applied, answered late but within the request timeout
    TIMEOUT = "timeout"  # answered after the server gave up (the effect is applied)
    APPLIED_500 = "applied_then_500"  # effect committed, then a 500
    DUPLICATE = "duplicate"  # applied and answered, then delivered once more later


#: Relative weights of the branch faults when a call is faulted.
_BRANCH_WEIGHTS = {
    BranchFault.ERROR: 3,
    BranchFault.ONGOING: 1,
    BranchFault.SLOW: 2,
    BranchFault.TIMEOUT: 1,
    BranchFault.APPLIED_500: 2,
    BranchFault.DUPLICATE: 2,
}


def rng_for(seed: int, *key: object) -> random.Random:
    """A random stream for one key under one seed (stable across runs and processes)."""
    text = "|".join([str(seed), *(str(k) for k in key)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def branch_fault(seed: int, rate: float, gid: str, branch_id: str, op: str, n: int) -> BranchFault:
    """The fault of the n-th call of (gid, branch_id, op); NONE with probability 1 - rate."""
    r = rng_for(seed, "branch", gid, branch_id, op, n)
    if r.random() >= rate:
        return BranchFault.NONE
    kinds = list(_BRANCH_WEIGHTS)
    return r.choices(kinds, weights=[_BRANCH_WEIGHTS[k] for k in kinds])[0]


class Event(StrEnum):
    """A process or store fault of the schedule."""

    KILL = "kill_9"  # kill -9 a server; it is restarted `duration` later
    CLOCK_JUMP = "clock_jump"  # move one server's clock by `amount` seconds
    STORE_PAUSE = "store_pause"  # the proxy forwards nothing for `duration`
    STORE_DROP = "store_drop"  # the proxy closes every store connection
    STORE_SLOW = "store_slow"  # the proxy delays every chunk by `amount` for `duration`
    STORE_CUT_AFTER_WRITE = "store_cut_after_write"  # forward a write, then cut (mid-write)
    KILL_AFTER_WRITE = "kill_9_after_write"  # forward a write, kill -9 its server at once
    STORE_RESTART = "store_restart"  # kill -9 the store itself, start it `duration` later


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: at `at` seconds into the run, on server `target` (if any)."""

    at: float
    event: Event
    target: int = 0
    duration: float = 0.0
    amount: float = 0.0


def schedule(
    seed: int,
    seconds: float,
    *,
    servers: int,
    proxy: bool,
    clock_jumps: bool,
    store_restarts: bool = False,
    kill_every: tuple[float, float] = (1.0, 3.0),
    store_every: tuple[float, float] = (1.0, 2.5),
) -> list[Fault]:
    """The process and store faults of a run, sorted by time.

    Kills come every `kill_every` seconds (uniform) and a killed server stays down 0.2–1.5 s.
    With a proxy, store faults come every `store_every` seconds (restarts of the store
    itself only when `store_restarts`); pauses and slow periods stay
    under a third of the lease so a live owner's claim never runs out under them.
    """
    r = rng_for(seed, "schedule")
    out: list[Fault] = []
    t = r.uniform(*kill_every)
    while t < seconds:
        out.append(Fault(t, Event.KILL, r.randrange(servers), duration=r.uniform(0.2, 1.5)))
        t += r.uniform(*kill_every)
    if proxy:
        t = r.uniform(*store_every)
        kinds = [Event.STORE_PAUSE, Event.STORE_DROP, Event.STORE_SLOW,
                 Event.STORE_CUT_AFTER_WRITE, Event.KILL_AFTER_WRITE]
        if store_restarts:  # only a store of our own (the private Redis)
            kinds.append(Event.STORE_RESTART)
        while t < seconds:
            kind = r.choice(kinds)
            out.append(Fault(t, kind, duration=r.uniform(0.2, 0.9),
                             amount=r.uniform(0.005, 0.05)))
            t += r.uniform(*store_every)
    if clock_jumps and servers > 1:
        t = r.uniform(2.0, 6.0)
        while t < seconds:
            # the last server is the one whose clock moves; it comes back to true time too
            out.append(Fault(t, Event.CLOCK_JUMP, servers - 1,
                             amount=r.choice([-6.0, -2.0, 0.0, 2.0, 6.0])))
            t += r.uniform(4.0, 10.0)
    out.sort(key=lambda f: f.at)
    return out
