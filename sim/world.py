"""One simulated run: nodes (engine + poller), clients, crashes, then quiescence.

A node is a process: an `Engine` and a `Poller` (the real ones) on its own view of the
shared `MemoryStore`, its own invoker and clock. A crash makes every await of that node
(store, branch call, sleep) never return: its tasks stop wherever they were, and nothing
they had not written survives, as after kill -9. A restart is a fresh node on the same
store. Clients call the engines' verbs as the API would, and may get no answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from dtmx.core.models import Change, Op, Outcome, Status, Transaction
from dtmx.core.timing import Timing
from dtmx.engine import Engine
from dtmx.errors import StoreUnavailable
from dtmx.invoke.base import BranchCall, CallResult, Followup
from dtmx.metrics import Metrics
from dtmx.poller import Poller
from dtmx.stores.base import Store
from dtmx.telemetry.observer import Observer
from sim import check
from sim.clients import LIMITS, Client, gid_of
from sim.config import Config, TxSpec
from sim.loop import VirtualLoop
from sim.net import Bank, Faults, Network, current_owner
from sim.store import MemoryStore
from sim.workflow import WF_CALLBACK, WorkflowApp

T0 = 1_800_000_000.0
TIMING = Timing(retry_interval=1.0, max_retry_interval=8.0, request_timeout=2.0,
                timeout_to_fail=6.0, lease=10.0)
#: faults and crashes stop here; then every node runs and everything must finish
FAULTS_UNTIL = 60.0
HORIZON = 600.0
_METRICS = Metrics()  # one registry for every run: building one per node costs more than a run


class SimObserver(Observer):
    """Tells the network which owner's run makes the calls that follow."""

    def run_started(self, trans: Transaction) -> None:
        current_owner.set(trans.owner)
        super().run_started(trans)


class Node:
    """One server process (one incarnation of it)."""

    def __init__(self, world: World, index: int, incarnation: int) -> None:
        self.world = world
        self.dead = False
        self.stopping = False  # no new requests: the API is closed first
        self.index = index
        self.name = f"n{index}.{incarnation}"
        clock = NodeClock(self)
        self.engine = Engine(store=cast(Store, NodeStore(self)), invoker=NodeInvoker(self),
                             clock=clock, timing=TIMING, limits=LIMITS, owner_prefix=self.name,
                             observer=SimObserver(clock=clock, metrics=_METRICS))
        self.poller = Poller(self.engine, interval=1.0, batch=4, concurrency=8)
        world.tasks.append(asyncio.get_running_loop().create_task(self.poller.run()))

    async def gate(self) -> None:
        """After any await: a dead node never goes on."""
        if self.dead:
            await asyncio.get_running_loop().create_future()


class NodeClock:
    """The node's clock: virtual time, off by the node's skew."""

    def __init__(self, node: Node) -> None:
        self.node = node
        skews = node.world.config.skews
        self.skew = skews[node.index] if node.index < len(skews) else 0.0

    def now(self) -> float:
        t = asyncio.get_running_loop().time()
        jumped = sum(j for at, n, j in self.node.world.config.jumps
                     if n == self.node.index and at <= t)
        return T0 + self.skew + jumped + t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.node.gate()


class NodeStore:
    """The node's connection to the store: latency, failures (before the write, or a
    reply lost after it), and nothing more once the node is dead."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.roundtrips = 0

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        target = getattr(self.node.world.store, name)

        async def verb(**kw: Any) -> Any:
            w, node = self.node.world, self.node
            rng = w.rng(kw.get("gid") or node.name)
            await asyncio.sleep(w.latency(rng))
            await node.gate()
            if w.in_outage():
                raise StoreUnavailable("sim: the store is down")
            fault = rng.random() < w.faults.store
            if fault and rng.random() < 0.5:
                raise StoreUnavailable("sim: the store did not answer")
            result = await target(**kw)
            await asyncio.sleep(w.latency(rng))
            await node.gate()
            if name == "update" and result is False and kw.get("expect_owner"):
                # the run learns it now and must stop: no call after this (a batch written
                # in the background is refused while the run's next calls go on)
                w.refused.add((kw["gid"], kw["expect_owner"]))
            if fault:
                raise StoreUnavailable("sim: the reply was lost after the write")
            return result

        return verb


class NodeInvoker:
    """The node's branch client. Like the HTTP invoker's keep-alive pool, it may send the
    call a run planned next (`BranchCall.then`) from the transport's callback the moment
    the current call's SUCCESS arrives, if the run says it is ready for it; the run then
    hands that call down with `sent` and only its result is awaited (`Config.presend`:
    how often the pool can, per such call)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def call(self, call: BranchCall) -> CallResult:
        if call.sent is not None:  # went out already: checked when it was sent
            res = await call.sent
        else:
            owner = current_owner.get()
            self.node.world.check_call(call, owner)
            res = await self._send(call, owner)
        await self.node.gate()
        return res

    def _send(self, call: BranchCall, owner: str) -> Awaitable[CallResult]:
        then = call.then
        if then is None or not self.node.world.config.presend:
            return self.node.world.net.call(call)
        return self.node.world.net.call(call, lambda outcome: self._follow(then, owner, outcome))

    def _follow(self, then: Followup, owner: str, outcome: Outcome) -> None:
        """The transport's callback: the answer of the call `then` follows has arrived."""
        w, nxt = self.node.world, then.call
        # a dead process sends nothing; the pool sends the next request only on a plain
        # success, only for a plain call it can pool, and only when the run is ready
        if (self.node.dead or outcome is not Outcome.SUCCESS or nxt is None or not nxt.url
                or nxt.json_rpc or nxt.sent is not None
                or w.rng(f"{nxt.gid}:presend").random() >= w.config.presend
                or not then.ready()):
            return
        # checked now, as it goes out (owner, claim, status, no refusal learned, the
        # unwritten bound): by the time the run awaits it a refusal may have come back, or
        # a write made the store look otherwise, and the call was made all the same
        w.check_call(nxt, owner, ahead=True)
        task = asyncio.ensure_future(self._send(nxt, owner))
        w.ahead.append(task)
        then.sent = task

    async def close(self) -> None:
        pass


@dataclass(slots=True)
class Outcomes:
    """What the clients were told and did."""

    acked: set[str] = field(default_factory=set)
    registered: dict[str, list[str]] = field(default_factory=dict)
    failing: dict[str, tuple[int, ...]] = field(default_factory=dict)
    kinds: dict[str, TxSpec] = field(default_factory=dict)
    #: (gid, branch, op) -> a workflow step's record, as acknowledged, and when
    recorded: dict[tuple[str, str, Op], tuple[tuple[Status, bytes], float]] = field(
        default_factory=dict)
    #: force stops written: gid -> the claim's owner at that moment
    stopped: dict[str, str] = field(default_factory=dict)
    #: force stops the operator was answered success for
    stop_acked: set[str] = field(default_factory=set)


class World:
    def __init__(self, config: Config) -> None:
        self.config = config
        # one stream per transaction (and per node, for the verbs of no one transaction),
        # all from net_seed: removing a transaction while shrinking leaves the others' luck
        self._rngs: dict[str, random.Random] = {}
        self.faults = Faults(**{k: getattr(config.faults, k)
                                for k in Faults.__dataclass_fields__})
        self.trace: list[str] = []
        self.violations: list[str] = []
        self.store = MemoryStore(on_status=self._on_status)
        self.bank = Bank(lambda: asyncio.get_running_loop().time(), self.rng, self.faults,
                         self.trace, self.violations)
        self.bank.calm.update(gid_of(t) for t in config.txs if t.calm)
        self.net = Network(self.bank, self.rng, self.faults, config.fast_net)
        self.nodes: list[Node] = []
        self.incarnations: list[int] = []
        self.out = Outcomes()
        self.clients_done = 0
        # every task and every node ever started stays referenced until the run ends: a
        # crashed node's tasks wait forever, and must not be collected mid-run
        self.tasks: list[asyncio.Task[None]] = []
        self.graveyard: list[Node] = []
        self.ahead: list[asyncio.Future[CallResult]] = []  # calls sent by _follow
        self.clients = Client(self)
        self.workflows = WorkflowApp(self)
        self.net.apps[WF_CALLBACK] = self.workflows.callback
        self.limits = LIMITS
        #: faults have stopped (the apps stop dying too)
        self.calm = False
        self.waived = 0
        #: gids an operator asked to force-stop; (gid, owner) whose CAS write was refused
        self.stopping: set[str] = set()
        self.refused: set[tuple[str, str]] = set()
        self.operators: list[asyncio.Task[None]] = []

    def now(self) -> float:
        return T0 + asyncio.get_running_loop().time()

    def in_outage(self) -> bool:
        now = asyncio.get_running_loop().time()
        return any(at <= now < at + length for at, length in self.config.outages
                   if at < FAULTS_UNTIL)

    def rng(self, key: str) -> random.Random:
        got = self._rngs.get(key)
        if got is None:
            got = self._rngs[key] = random.Random(f"{self.config.net_seed}:{key}")
        return got

    def latency(self, rng: random.Random) -> float:
        """One way of a store round trip: mostly a millisecond, now and then a stall (kept
        well under half a lease: a longer pause lets a claim lapse mid-run, which no lease
        design survives, and the owner check would report it)."""
        if rng.random() < self.config.stalls:
            return rng.uniform(0.05, 1.0)
        return rng.uniform(0.0005, 0.005)

    def t(self) -> str:
        return f"{asyncio.get_running_loop().time():.3f}"

    # ---- checks made as things happen -----------------------------------------------
    def _on_status(self, before: Transaction, change: Change) -> None:
        status = change.status
        assert status is not None
        self.trace.append(f"{self.t()} status {before.gid} {before.status}->{status}")
        if check.force_stop_legal(before, change, before.gid in self.stopping):
            self.out.stopped[before.gid] = before.owner
        elif not check.legal(before.trans_type, before.status, status):
            self.violations.append(
                f"illegal transition of {before.gid} ({before.trans_type}): "
                f"{before.status} -> {status}")

    def check_call(self, call: BranchCall, owner: str, ahead: bool = False) -> None:
        """Check a branch call as it is sent (`ahead`: sent from the transport's callback,
        before the run looked at the answer of the call before it)."""
        self.trace.append(f"{self.t()} call {call.gid} {call.branch_id} {call.op} by {owner}"
                          + (" ahead" if ahead else ""))
        if (call.gid, owner) in self.refused:
            self.violations.append(f"{self.t()} {call.op} {call.gid}/{call.branch_id} by "
                                   f"{owner}: called after that run's write was refused")
        problem = check.call_allowed(self.store, call, owner, self.now(),
                                     self.out.stopped.get(call.gid))
        if problem and self.config.jumps:
            self.waived += 1  # see Config.jumps
            self.trace.append(f"{self.t()} waived: {problem}")
        elif problem:
            self.violations.append(f"{self.t()} {problem}")

    # ---- nodes ----------------------------------------------------------------------
    def start_node(self, i: int) -> None:
        self.incarnations[i] += 1
        self.nodes[i] = Node(self, i, self.incarnations[i])
        self.graveyard.append(self.nodes[i])
        self.trace.append(f"{self.t()} start {self.nodes[i].name}")

    def crash(self, i: int) -> None:
        node = self.nodes[i]
        if not node.dead:
            node.dead = True
            self.trace.append(f"{self.t()} crash {node.name}")

    async def stop(self, i: int) -> None:
        """A graceful stop, as the server does on SIGTERM; then the process is gone."""
        node = self.nodes[i]
        node.stopping = True
        self.trace.append(f"{self.t()} stop {node.name}")
        await node.poller.stop()
        await node.engine.close()
        self.crash(i)

    async def _crash_later(self, at: float, i: int, down: float, graceful: bool) -> None:
        await asyncio.sleep(at)
        if i >= len(self.nodes) or self.nodes[i].dead or self.nodes[i].stopping:
            return
        if graceful:
            await self.stop(i)
        else:
            self.crash(i)
        await asyncio.sleep(down)
        if asyncio.get_running_loop().time() < FAULTS_UNTIL and self.nodes[i].dead:
            self.start_node(i)

    # ---- the run --------------------------------------------------------------------
    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        self.nodes = []
        self.incarnations = [0] * cfg.nodes
        for i in range(cfg.nodes):
            self.nodes.append(None)  # type: ignore[arg-type]
            self.start_node(i)
        for c in cfg.crashes:
            self.tasks.append(loop.create_task(
                self._crash_later(c.at, c.node, c.down, c.graceful)))
        for spec in cfg.txs:
            self.tasks.append(loop.create_task(self.clients.run(spec)))
            if spec.force_stop_at >= 0:
                self.operators.append(loop.create_task(self.clients.force_stop(spec)))
        await asyncio.sleep(FAULTS_UNTIL)
        for k in Faults.__dataclass_fields__:
            setattr(self.faults, k, 0.0)
        self.calm = True
        for i, n in enumerate(self.nodes):
            if n.dead:
                self.start_node(i)
        self.trace.append(f"{self.t()} quiet")
        while loop.time() < HORIZON:
            if (self.clients_done == len(cfg.txs) and all(o.done() for o in self.operators)
                    and check.all_final(self.store)):
                break
            await asyncio.sleep(2.0)
        self.trace.append(f"{self.t()} end")


@dataclass(slots=True)
class Result:
    config: Config
    violations: list[str]
    trace: list[str]
    end: float

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()[:16]


def run(config: Config) -> Result:
    """Run `config` to the end and check it; the same config gives the same trace."""
    world = World(config)
    loop = VirtualLoop()
    try:
        loop.run_until_complete(world.main())
        end = loop.time()
    finally:
        loop.close()
    world.violations.extend(check.final(world.store, world.bank, world.out))
    return Result(config, world.violations, world.trace, end)
