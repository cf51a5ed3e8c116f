"""What one simulated run is made of, drawn from its seed; shrinking edits this value.

Everything random later in the run comes from `Config.net_seed` (the network, the store's
faults, the bank's transient answers) or from each transaction's own seed (its client's
choices), so removing one transaction or one crash leaves the rest of a schedule alike.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field

from sim.net import Faults

KINDS = ("saga", "tcc", "msg", "xa", "workflow")


@dataclass(slots=True)
class TxSpec:
    """One client and its transaction."""

    kind: str
    start: float
    steps: int
    seed: int
    wait_result: bool = False
    concurrent: bool = False
    timeout_to_fail: int = 0
    retry_limit: int = 0
    #: 0-based steps (saga actions, TCC tries) that fail for good
    failing: tuple[int, ...] = ()
    #: the client dies at this point of its script (-1: never)
    crash_at: int = -1
    #: a concurrent saga's prerequisites (custom_data orders: step -> steps before it)
    orders: dict[str, list[int]] = field(default_factory=dict)
    #: the client sends its last verb once more after it was answered
    repeat: bool = False
    #: an operator force-stops the transaction this long after `start` (-1: never)
    force_stop_at: float = -1.0
    #: its branches answer without network or transient faults
    calm: bool = False


@dataclass(slots=True)
class Crash:
    """Node `node` dies at `at` and a fresh one starts on the same store `down` later.
    `graceful`: it is stopped as on SIGTERM (poller stopped, runs cancelled, which hand
    their claims back) instead of killed."""

    at: float
    node: int
    down: float
    graceful: bool = False


@dataclass(slots=True)
class Config:
    seed: int
    nodes: int
    net_seed: int
    txs: list[TxSpec] = field(default_factory=list)
    crashes: list[Crash] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    #: (start, seconds) during which every store call fails
    outages: list[tuple[float, float]] = field(default_factory=list)
    #: each node's clock error (seconds, +-1 at most: well inside half a lease, the margin
    #: the lease rules keep; a larger one lets two nodes hold one claim, by design)
    skews: list[float] = field(default_factory=list)
    #: (at, node, seconds): that node's clock jumps (forward or back) by more than the
    #: lease margin. Two nodes may then hold one claim, by design of any lease; the
    #: per-call ownership checks are waived for such a run, and what must still hold is
    #: that the compare-and-set writes and the barrier keep every effect and outcome right.
    jumps: list[tuple[float, int, float]] = field(default_factory=list)
    #: how often a run's next call (`BranchCall.then`) is sent from the transport's callback
    #: the moment the current one answers SUCCESS, as the HTTP pool does (0: never; a
    #: schedule from before this knob replays without it)
    presend: float = 0.0
    #: branches answer in 0.1-2 ms each way, as on the benchmarks' machine, not 1-20 ms: a
    #: long saga then runs many steps while one of its writes is under way
    fast_net: bool = False
    #: how often one way of a store round trip stalls (up to a second): a long saga's
    #: background write is then still under way many steps later
    stalls: float = 0.03

    @classmethod
    def generate(cls, seed: int) -> Config:
        """The run of `seed`: 1-3 nodes, 1-8 transactions (one seed in ten: up to 24),
        some faults, some crashes, store outages, clock skews, operators' force stops."""
        r = random.Random(seed)
        nodes = r.randint(1, 3)
        # now and then a crowd: more claims per batch, more contention on the pollers
        txs = [_tx(r) for _ in range(r.randint(1, 8) if r.random() < 0.9 else r.randint(9, 24))]
        crashes = [Crash(round(r.uniform(0, 50), 3), r.randrange(nodes),
                         round(r.uniform(0.5, 15), 3), r.random() < 0.3)
                   for _ in range(r.choice((0, 0, 1, 2, 4)))]
        faults = Faults(
            refuse=r.choice((0.0, 0.05)),
            drop=r.choice((0.0, 0.05, 0.2)),
            slow=r.choice((0.0, 0.05, 0.2)),
            dup=r.choice((0.0, 0.1, 0.3)),
            lose_reply=r.choice((0.0, 0.1, 0.3)),
            transient=r.choice((0.0, 0.1, 0.3)),
            store=r.choice((0.0, 0.0, 0.02, 0.1)),
        )
        outages = [(round(r.uniform(0, 50), 3), round(r.uniform(0.2, 8), 3))
                   for _ in range(r.choice((0, 0, 0, 1, 2)))]
        skews = [round(r.uniform(-1, 1), 3) if r.random() < 0.3 else 0.0 for _ in range(nodes)]
        jumps = [(round(r.uniform(0, 50), 3), r.randrange(nodes), r.choice((-1, 1)) *
                  round(r.uniform(5, 40), 3)) for _ in range(1 if r.random() < 0.1 else 0)]
        net_seed = r.getrandbits(32)
        # drawn last, so that every earlier draw (and each seed's schedule) stays as it was
        for t in txs:
            if r.random() < 0.15:
                t.force_stop_at = round(r.uniform(0, 12), 3)
        # now and then a saga long enough that its successes are written in batches, one
        # batch in the background while the next actions are called (dtmx.core.saga)
        for t in txs:
            if t.kind == "saga" and r.random() < 0.3:
                t.steps = r.randint(40, 160)
                if r.random() < 0.5:  # stopped mid-batch: the background write is refused
                    t.force_stop_at = round(r.uniform(0.1, 2), 3)
        # most seeds send a long saga's next action from the transport's callback, as the
        # HTTP pool does; some never (the run's own send), some now and then (both mixed)
        presend = r.choice((0.0, 0.5, 1.0, 1.0))
        fast_net = r.random() < 0.5
        stalls = r.choice((0.03, 0.03, 0.3))
        # half the long sagas are plain (sequential, no timeout or retry limit) with calm
        # branches: their runs go through whole batches, each written in the background
        # while the next actions are sent (from the transport's callback, with presend);
        # a force stop then lands while it runs, mostly, whatever the network's speed
        step = 0.002 if fast_net else 0.02
        for t in txs:
            if t.kind == "saga" and t.steps > 4 and r.random() < 0.5:
                t.calm, t.concurrent, t.orders = True, False, {}
                t.timeout_to_fail = t.retry_limit = 0
                if t.force_stop_at >= 0:
                    t.force_stop_at = round(r.uniform(0.05, 1.2) * t.steps * step, 3)
        return cls(seed, nodes, net_seed, txs, crashes, faults, outages, skews, jumps,
                   presend, fast_net, stalls)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Config:
        d = json.loads(text)
        return cls(
            seed=d["seed"], nodes=d["nodes"], net_seed=d["net_seed"],
            txs=[TxSpec(**{**t, "failing": tuple(t["failing"])}) for t in d["txs"]],
            crashes=[Crash(**c) for c in d["crashes"]],
            faults=Faults(**d["faults"]),
            outages=[(a, b) for a, b in d["outages"]],
            skews=d.get("skews", []),
            jumps=[(a, n, j) for a, n, j in d.get("jumps", [])],
            presend=d.get("presend", 0.0),
            fast_net=d.get("fast_net", False),
            stalls=d.get("stalls", 0.03),
        )


def _tx(r: random.Random) -> TxSpec:
    kind = r.choice(KINDS)
    steps = r.randint(1, 4)
    failing = tuple(i for i in range(steps) if r.random() < 0.12) if kind != "msg" else ()
    concurrent = kind in ("saga", "msg") and r.random() < 0.3
    orders: dict[str, list[int]] = {}
    if kind == "saga" and concurrent and r.random() < 0.6:
        for s in range(1, steps):
            pres = [p for p in range(s) if r.random() < 0.5]
            if pres:
                orders[str(s)] = pres
    return TxSpec(
        kind=kind,
        start=round(r.uniform(0, 30), 3),
        steps=steps,
        seed=r.getrandbits(32),
        wait_result=kind == "saga" and r.random() < 0.3,
        concurrent=concurrent,
        # short timeouts, so that registrations and msg commits race with them
        timeout_to_fail=r.choice((0, 2, 3, 5, 8)) if kind != "saga" else r.choice((0, 0, 4)),
        retry_limit=r.choice((0, 0, 2)) if kind == "saga" else 0,
        failing=failing,
        # a workflow's app has more points to die at: before and after each call
        crash_at=r.choice((-1, -1, -1, r.randint(0, 4 * steps + 2 if kind == "workflow"
                                                 else steps + 1))),
        orders=orders,
        repeat=r.random() < 0.15,
    )
