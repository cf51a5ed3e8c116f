"""Simulated branches behind a simulated network.

`Bank` is every branch service at once: DTM's barrier (one row per gid, branch and op;
a compensation or cancel first inserts its origin's row, so that it is null when the
origin never ran, and the origin, arriving later, is refused), a ledger of the effects
applied, and the business's own answers (a step that fails for good, transient errors,
ONGOING, an error after the effect was committed).

`SimInvoker` is the engine's `Invoker`: a call is a message that may be refused at once,
lost, delayed past the caller's timeout, duplicated, or whose answer is lost after the
branch applied it. The caller gets ERROR at its timeout, as from the real HTTP client.
A call to a URL an app listens on (a workflow's callback) is handed to that app, which
answers when its handler is done, or never if it died.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dtmx.core.models import Op, Outcome
from dtmx.invoke.base import BranchCall, CallResult

#: The owner token of the run making the current call (set by `sim.world.SimObserver` when
#: a run starts; the calls' tasks inherit it), so every call can be checked against the
#: store's owner.
current_owner: contextvars.ContextVar[str] = contextvars.ContextVar("sim_owner", default="")

QUERY_URL = "sim://bank/query"
#: An op's origin: a compensation or cancel is null unless its origin ran.
#: (An XA branch's first phase, its local prepare, is recorded as its ACTION.)
ORIGIN = {Op.COMPENSATE: Op.ACTION, Op.CANCEL: Op.TRY, Op.ROLLBACK: Op.ACTION}
MSG_BRANCH = "00"


@dataclass(slots=True)
class Faults:
    """Probabilities of each fault, per message or per call (0 = never)."""

    refuse: float = 0.0  # connection refused: ERROR at once, nothing delivered
    drop: float = 0.0  # the request is lost
    slow: float = 0.0  # delivered after up to twice the caller's timeout
    dup: float = 0.0  # delivered twice
    lose_reply: float = 0.0  # applied, but the answer is lost
    transient: float = 0.0  # the branch answers ERROR / ONGOING (/ FAILURE if retried)
    store: float = 0.0  # a store call fails (before or after it is applied)



@dataclass(slots=True)
class Bank:
    """Branch services with DTM's barrier; `effects` is what really happened."""

    clock: Callable[[], float]
    rng: Callable[[str], random.Random]
    faults: Faults
    trace: list[str]
    violations: list[str]
    #: (gid, branch_id) of saga steps / TCC tries that fail for good (answer FAILURE)
    failing: set[tuple[str, str]] = field(default_factory=set)
    barrier: dict[tuple[str, str, Op], str] = field(default_factory=dict)
    effects: dict[tuple[str, str, Op], float] = field(default_factory=dict)
    #: gids whose branches answer without network or transient faults (TxSpec.calm)
    calm: set[str] = field(default_factory=set)

    def _effect(self, key: tuple[str, str, Op]) -> None:
        if key in self.effects:
            self.violations.append(f"effect applied twice: {key[0]} {key[1]} {key[2]}")
        self.effects[key] = self.clock()
        self.trace.append(f"{self.clock():.3f} effect {key[0]} {key[1]} {key[2]}")

    def handle(self, call: BranchCall) -> Outcome:
        """One delivery of `call` to its service: apply it (at most once) and answer."""
        op = Op(call.op)  # a workflow's callback (its name as op) goes to its app
        if op is Op.MSG:
            return self._query_prepared(call.gid)
        key = (call.gid, call.branch_id, op)
        second_phase = op not in (Op.ACTION, Op.TRY)
        rng = self.rng(call.gid)
        transient = 0.0 if call.gid in self.calm else self.faults.transient
        if rng.random() < transient:
            # before anything happened: ERROR, ONGOING, or (second phase only) FAILURE,
            # which the server must retry too
            choices = [Outcome.ERROR, Outcome.ONGOING]
            if second_phase:
                choices.append(Outcome.FAILURE)
            return rng.choice(choices)
        origin = ORIGIN.get(op)
        null = False
        if origin is not None:
            okey = (call.gid, call.branch_id, origin)
            if okey not in self.barrier:
                self.barrier[okey] = "null"  # the origin, arriving later, is refused
                null = True
        if key in self.barrier:
            return Outcome.SUCCESS  # a duplicate, or an origin after its compensation
        if not second_phase and (call.gid, call.branch_id) in self.failing:
            return Outcome.FAILURE  # the local transaction rolled back: no barrier row
        self.barrier[key] = "done"
        if not null:
            self._effect(key)
        if rng.random() < transient:
            return Outcome.ERROR  # committed, then the handler failed
        return Outcome.SUCCESS

    def msg_commit(self, gid: str) -> bool:
        """The msg client's local transaction: refused once query_prepared rolled it
        back (its barrier row is taken)."""
        key = (gid, MSG_BRANCH, Op.MSG)
        if key in self.barrier:
            return False
        self.barrier[key] = "commit"
        self.trace.append(f"{self.clock():.3f} msg-commit {gid}")
        return True

    def _query_prepared(self, gid: str) -> Outcome:
        rng = self.rng(gid)
        if rng.random() < self.faults.transient:
            return rng.choice([Outcome.ERROR, Outcome.ONGOING])
        key = (gid, MSG_BRANCH, Op.MSG)
        got = self.barrier.setdefault(key, "rollback")
        return Outcome.SUCCESS if got == "commit" else Outcome.FAILURE


_CALM = Faults()


#: An app's handler of calls to one URL: its answer, or None if it died meanwhile.
App = Callable[[BranchCall], Awaitable[Outcome | None]]


class Network:
    """Carries calls to the bank (or to an app listening on their URL) with the configured
    faults, on the loop's timers."""

    def __init__(self, bank: Bank, rng: Callable[[str], random.Random], faults: Faults,
                 fast: bool = False) -> None:
        self.bank = bank
        #: a one-way trip takes 0.1-2 ms (as in the benchmarks), not 1-20 ms
        self.scale = 0.1 if fast else 1.0
        self.rng = rng
        self.faults = faults
        self.apps: dict[str, App] = {}
        #: the apps' running handlers (kept referenced until the run ends)
        self.handling: list[asyncio.Task[None]] = []

    def _delay(self, f: Faults, rng: random.Random, timeout: float) -> float:
        if rng.random() < f.slow:
            return rng.uniform(0.0, 2 * timeout)
        return rng.uniform(0.001, 0.02) * self.scale

    async def call(self, call: BranchCall,
                   answered: Callable[[Outcome], None] | None = None) -> CallResult:
        """Send `call`; its answer, or ERROR when refused or at the caller's timeout.
        `answered` is told the branch's answer the moment it reaches the caller (the
        transport's callback, before the caller's task runs), not a timeout or refusal."""
        f, rng = self.faults, self.rng(call.gid)
        if call.gid in self.bank.calm:
            f = _CALM
        if rng.random() < f.refuse:
            return CallResult(Outcome.ERROR, "connection refused")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[CallResult] = loop.create_future()

        def reply(outcome: Outcome) -> None:
            if not answer.done():
                answer.set_result(CallResult(outcome, "sim"))
                if answered is not None:
                    answered(outcome)

        def answer_with(first: bool, outcome: Outcome | None) -> None:
            if outcome is not None and first and rng.random() >= f.lose_reply:
                loop.call_later(self._delay(f, rng, call.timeout), reply, outcome)

        async def serve(app: App, first: bool) -> None:
            answer_with(first, await app(call))

        def deliver(first: bool) -> None:
            app = self.apps.get(call.url)
            if app is not None:  # it answers when its handler is done (or never)
                self.handling.append(loop.create_task(serve(app, first)))
                return
            answer_with(first, self.bank.handle(call))

        if rng.random() >= f.drop:
            loop.call_later(self._delay(f, rng, call.timeout), deliver, True)
            if rng.random() < f.dup:
                again = self._delay(f, rng, call.timeout) + rng.uniform(0, 3)
                loop.call_later(again, deliver, False)

        def timed_out() -> None:
            if not answer.done():
                answer.set_result(CallResult(Outcome.ERROR, "sim"))

        timer = loop.call_later(call.timeout, timed_out)
        try:
            return await answer
        finally:
            timer.cancel()


