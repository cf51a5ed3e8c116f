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
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from dtmx.core.limits import Limits
from dtmx.core.models import Op, Outcome, Status, Transaction, TransType
from dtmx.core.request import (
    TransRequest,
    Verb,
    check_trans,
    parse_registration,
    parse_trans_body,
)
from dtmx.core.timing import Timing
from dtmx.engine import Engine
from dtmx.errors import DtmxError, StoreUnavailable
from dtmx.invoke.base import BranchCall, CallResult
from dtmx.metrics import Metrics
from dtmx.poller import Poller
from dtmx.stores.base import Store
from dtmx.telemetry.observer import Observer
from sim import check
from sim.config import Config, TxSpec
from sim.loop import VirtualLoop
from sim.net import QUERY_URL, Bank, Faults, Network, current_owner
from sim.store import MemoryStore

T0 = 1_800_000_000.0
TIMING = Timing(retry_interval=1.0, max_retry_interval=8.0, request_timeout=2.0,
                timeout_to_fail=6.0, lease=10.0)
#: faults and crashes stop here; then every node runs and everything must finish
FAULTS_UNTIL = 60.0
HORIZON = 600.0
CLIENT_TIMEOUT = 5.0
URL = "sim://bank/"
_METRICS = Metrics()  # one registry for every run: building one per node costs more than a run
_LIMITS = Limits()


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
        self.index = index
        self.name = f"n{index}.{incarnation}"
        clock = NodeClock(self)
        self.engine = Engine(store=cast(Store, NodeStore(self)), invoker=NodeInvoker(self),
                             clock=clock, timing=TIMING, limits=_LIMITS, owner_prefix=self.name,
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
        return T0 + self.skew + asyncio.get_running_loop().time()

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
            if fault:
                raise StoreUnavailable("sim: the reply was lost after the write")
            return result

        return verb


class NodeInvoker:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def call(self, call: BranchCall) -> CallResult:
        w = self.node.world
        w.check_call(call, current_owner.get())
        res = await w.net.call(call)
        await self.node.gate()
        return res

    async def close(self) -> None:
        pass


@dataclass(slots=True)
class Outcomes:
    """What the clients were told and did."""

    acked: set[str] = field(default_factory=set)
    registered: dict[str, list[str]] = field(default_factory=dict)
    failing: dict[str, tuple[int, ...]] = field(default_factory=dict)
    kinds: dict[str, TxSpec] = field(default_factory=dict)


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
        self.net = Network(self.bank, self.rng, self.faults)
        self.nodes: list[Node] = []
        self.incarnations: list[int] = []
        self.out = Outcomes()
        self.clients_done = 0
        # every task and every node ever started stays referenced until the run ends: a
        # crashed node's tasks wait forever, and must not be collected mid-run
        self.tasks: list[asyncio.Task[None]] = []
        self.graveyard: list[Node] = []

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
        if rng.random() < 0.03:
            return rng.uniform(0.05, 1.0)
        return rng.uniform(0.0005, 0.005)

    def t(self) -> str:
        return f"{asyncio.get_running_loop().time():.3f}"

    # ---- checks made as things happen -----------------------------------------------
    def _on_status(self, before: Transaction, status: Status) -> None:
        self.trace.append(f"{self.t()} status {before.gid} {before.status}->{status}")
        if not check.legal(before.trans_type, before.status, status):
            self.violations.append(
                f"illegal transition of {before.gid} ({before.trans_type}): "
                f"{before.status} -> {status}")

    def check_call(self, call: BranchCall, owner: str) -> None:
        self.trace.append(f"{self.t()} call {call.gid} {call.branch_id} {call.op} by {owner}")
        problem = check.call_allowed(self.store, call, owner, self.now())
        if problem:
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

    async def _crash_later(self, at: float, i: int, down: float) -> None:
        await asyncio.sleep(at)
        if i >= len(self.nodes) or self.nodes[i].dead:
            return
        self.crash(i)
        await asyncio.sleep(down)
        if asyncio.get_running_loop().time() < FAULTS_UNTIL and self.nodes[i].dead:
            self.start_node(i)

    # ---- clients --------------------------------------------------------------------
    async def api(self, rng: random.Random, verb: Callable[[Engine], Awaitable[None]]) -> str:
        """One request to a live node: 'ok', 'error', or 'lost' (no answer)."""
        while True:
            alive = [n for n in self.nodes if not n.dead]
            if alive:
                break
            await asyncio.sleep(0.5)
        node = alive[rng.randrange(len(alive))]
        task = asyncio.ensure_future(verb(node.engine))
        task.add_done_callback(self._server_error)
        done, _ = await asyncio.wait({task}, timeout=CLIENT_TIMEOUT)
        if not done:
            return "lost"
        if task.exception() is not None:
            return "error"
        if rng.random() < self.faults.lose_reply:
            return "lost"
        return "ok"

    def _server_error(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            return
        e = task.exception()
        if e is not None and not isinstance(e, DtmxError):
            self.violations.append(f"the engine raised {type(e).__name__}: {e} (a 500)")

    async def client(self, idx: int, spec: TxSpec) -> None:
        await asyncio.sleep(spec.start)
        gid = f"{spec.kind[0]}{spec.seed % 10**6}"  # stable when others are removed
        self.out.kinds[gid] = spec
        try:
            await self._client(gid, spec)
        except Exception as e:  # the simulation's own bug, or an API it no longer matches
            self.violations.append(f"client {gid} crashed: {type(e).__name__}: {e}")
        finally:
            self.clients_done += 1

    async def _client(self, gid: str, spec: TxSpec) -> None:
        rng = random.Random(spec.seed)
        if spec.kind == "saga":
            await self._saga(gid, spec, rng)
        elif spec.kind in ("tcc", "xa"):
            await self._registered(gid, spec, rng)
        else:
            await self._msg(gid, spec, rng)

    def _request(self, gid: str, spec: TxSpec, verb: Verb) -> TransRequest:
        body: dict[str, Any] = {"gid": gid, "trans_type": spec.kind,
                                "timeout_to_fail": spec.timeout_to_fail,
                                "retry_limit": spec.retry_limit,
                                "wait_result": spec.wait_result,
                                "concurrent": spec.concurrent}
        if spec.kind == "saga":
            body["steps"] = [{"action": URL + "action", "compensate": URL + "compensate"}
                             for _ in range(spec.steps)]
        elif spec.kind == "msg":
            body["steps"] = [{"action": URL + "action"} for _ in range(spec.steps)]
            body["query_prepared"] = QUERY_URL
        if "steps" in body:
            body["payloads"] = ["{}"] * spec.steps
        if spec.orders:
            body["custom_data"] = json.dumps({"concurrent": True, "orders": spec.orders})
        return check_trans(parse_trans_body(body), verb, _LIMITS)

    async def _until_ok(self, rng: random.Random, gid: str, spec: TxSpec, verb: Verb,
                        tries: int = 3) -> bool:
        for _ in range(tries):
            req = self._request(gid, spec, verb)  # a fresh request, as parsed from the wire
            fn = {Verb.PREPARE: Engine.prepare, Verb.SUBMIT: Engine.submit,
                  Verb.ABORT: Engine.abort}[verb]
            res = await self.api(rng, lambda e, fn=fn, req=req: fn(e, req))  # type: ignore[misc]
            self.trace.append(f"{self.t()} client {gid} {verb} {res}")
            if res == "ok":
                if spec.repeat:  # as after an answer lost on the way back
                    again = self._request(gid, spec, verb)
                    res = await self.api(rng, lambda e, fn=fn, req=again: fn(e, req))  # type: ignore[misc]
                    self.trace.append(f"{self.t()} client {gid} {verb} again {res}")
                return True
            await asyncio.sleep(rng.uniform(0.2, 2.0))
        return False

    async def _saga(self, gid: str, spec: TxSpec, rng: random.Random) -> None:
        for i in spec.failing:
            self.bank.failing.add((gid, f"{i + 1:02d}"))
        if spec.crash_at == 0:
            return
        if await self._until_ok(rng, gid, spec, Verb.SUBMIT):
            self.out.acked.add(gid)

    async def _registered(self, gid: str, spec: TxSpec, rng: random.Random) -> None:
        """TCC: register, then try; XA: register, then the branch's local prepare (its
        ACTION here); submit if every first phase succeeded, else abort."""
        tt = TransType(spec.kind)
        urls = ({"cancel": URL + "cancel", "confirm": URL + "confirm"} if tt is TransType.TCC
                else {"url": URL + "xa"})
        first = Op.TRY if tt is TransType.TCC else Op.ACTION
        for i in spec.failing:
            self.bank.failing.add((gid, f"{i + 1:02d}"))
        if not await self._until_ok(rng, gid, spec, Verb.PREPARE):
            return
        self.out.acked.add(gid)
        registered = self.out.registered.setdefault(gid, [])
        ok = True
        for i in range(spec.steps):
            await asyncio.sleep(rng.uniform(0.0, 2.5))  # near the timeout, on purpose
            if spec.crash_at == i:
                return
            bid = f"{i + 1:02d}"
            reg = parse_registration({"gid": gid, "trans_type": spec.kind, "branch_id": bid,
                                      "data": "{}", **urls})
            res = await self.api(rng, lambda e, reg=reg: e.register_branch(reg))  # type: ignore[misc]
            self.trace.append(f"{self.t()} client {gid} register {bid} {res}")
            if res != "ok":
                ok = False
                break
            registered.append(bid)
            tried = await self.net.call(BranchCall(URL + "try", gid, tt, bid, first, b"{}",
                                                   timeout=2.0))
            self.trace.append(f"{self.t()} client {gid} try {bid} {tried.outcome}")
            if tried.outcome is not Outcome.SUCCESS:
                ok = False
                break
        if spec.crash_at == spec.steps:
            return
        await self._until_ok(rng, gid, spec, Verb.SUBMIT if ok else Verb.ABORT)

    async def _msg(self, gid: str, spec: TxSpec, rng: random.Random) -> None:
        if not await self._until_ok(rng, gid, spec, Verb.PREPARE):
            return
        self.out.acked.add(gid)
        await asyncio.sleep(rng.uniform(0.0, 8.0))  # near the timeout, on purpose
        if spec.crash_at == 0:
            return
        committed = rng.random() < 0.8 and self.bank.msg_commit(gid)
        if spec.crash_at == 1:
            return
        await self._until_ok(rng, gid, spec, Verb.SUBMIT if committed else Verb.ABORT)

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
            self.tasks.append(loop.create_task(self._crash_later(c.at, c.node, c.down)))
        for i, spec in enumerate(cfg.txs):
            self.tasks.append(loop.create_task(self.client(i, spec)))
        await asyncio.sleep(FAULTS_UNTIL)
        for k in Faults.__dataclass_fields__:
            setattr(self.faults, k, 0.0)
        for i, n in enumerate(self.nodes):
            if n.dead:
                self.start_node(i)
        self.trace.append(f"{self.t()} quiet")
        while loop.time() < HORIZON:
            if self.clients_done == len(cfg.txs) and check.all_final(self.store):
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
