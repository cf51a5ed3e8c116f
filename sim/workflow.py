"""The simulated workflow app (DTM's workflow mode): its client and its callback.

A workflow of `spec.steps` steps: each step's action is a branch call (with the barrier,
so a repeat applies nothing) whose result the app makes up on the spot (a new value on
every run: replaying a recorded step must hand back the recorded one); some steps have a
commit callback; every step has a rollback. The app runs it as DTM's workflow client does:
`prepareWorkflow` (which answers the recorded steps), then each step in order, replaying a
recorded one and running and recording (`registerBranch`) the others; a step that fails for
good fails the workflow, whose rollbacks then run for the steps that succeeded, newest
first; else the commits run, newest first; then `submit` with the result. A step answered
ERROR or ONGOING is not recorded: the run stops, and the server's resume replays it.

The client runs it once (and may die at any point); the server's poller calls the callback
(`WF_CALLBACK`) of an unfinished one, which runs it again (and may die too, while faults
last); a duplicated delivery runs two replays at once. Every `prepareWorkflow` answer is
checked against what was recorded before: recorded steps never change nor vanish.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from dtmx.core.models import Branch, Op, Outcome, Status, Transaction, TransType
from dtmx.core.request import Verb, check_trans, parse_registration, parse_trans_body
from dtmx.invoke.base import BranchCall
from sim.config import TxSpec

if TYPE_CHECKING:
    from sim.world import World

WF_CALLBACK = "sim://app/workflow"
WF_NAME = "transfer"
URL = "sim://bank/wf-"
#: a callback's replay dies at some point with this probability, while faults last
REPLAY_CRASH = 0.3
Recorded = tuple[Status, bytes]


def commit_steps(spec: TxSpec) -> list[str]:
    """The branch ids of the steps that have a commit callback (drawn from the seed)."""
    return [f"{i + 1:02d}" for i in range(spec.steps) if (spec.seed >> i) & 1]


def result_of(results: list[bytes]) -> str:
    """The workflow's result (base64, as submitted): its actions' results joined."""
    return base64.b64encode(b"|".join(results)).decode()


class Crashed(Exception):
    """The app died here: nothing more is sent, no answer is given."""


class WorkflowApp:
    """The app of every workflow of one world."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.runs = itertools.count(1)

    async def client(self, gid: str, spec: TxSpec, rng: random.Random) -> None:
        """The workflow's first run, by its client."""
        for i in spec.failing:
            self.w.bank.failing.add((gid, f"{i + 1:02d}"))
        await self.execute(gid, spec, rng, spec.crash_at, client=True)

    async def callback(self, call: BranchCall) -> Outcome | None:
        """The server resumes `call.gid`: replay it (None: the app died meanwhile)."""
        spec = self.w.out.kinds[call.gid]
        rng = self.w.rng(f"{call.gid}:app")
        crash_at = -1
        if not self.w.calm and rng.random() < REPLAY_CRASH:
            crash_at = rng.randrange(4 * spec.steps + 3)
        if call.op != WF_NAME or call.payload != spec.seed.to_bytes(8, "big"):
            self.w.violations.append(f"{call.gid}: callback with op {call.op!r} "
                                     f"and input {call.payload!r}")
        return await self.execute(call.gid, spec, rng, crash_at, client=False)

    async def execute(self, gid: str, spec: TxSpec, rng: random.Random, crash_at: int,
                      client: bool) -> Outcome | None:
        """One run: SUCCESS or FAILURE once the workflow is final, ERROR or ONGOING (as
        its step answered) if it stopped and is resumed later, None if the app died."""
        run = f"r{next(self.runs)}"
        points = itertools.count()

        def point() -> None:
            if next(points) == crash_at:
                self.w.trace.append(f"{self.w.t()} app {gid} {run} dies")
                raise Crashed

        try:
            return await self._execute(gid, spec, rng, run, point, client)
        except Crashed:
            return None
        except Exception as e:  # the simulation's own bug, or an API it no longer matches
            self.w.violations.append(f"app {gid} {run} crashed: {type(e).__name__}: {e}")
            return None

    async def _execute(self, gid: str, spec: TxSpec, rng: random.Random, run: str,
                       point: Callable[[], None], client: bool) -> Outcome:
        got = await self._prepare(gid, spec, rng, client)
        if got is None:
            return Outcome.ERROR
        trans, branches = got
        if trans.status.finished:
            return Outcome.SUCCESS if trans.status is Status.SUCCEED else Outcome.FAILURE
        rec = {(b.branch_id, b.op): (b.status, b.data) for b in branches}
        results: list[bytes] = []
        done: list[str] = []
        failed = False
        for i in range(spec.steps):
            bid = f"{i + 1:02d}"
            point()
            step = rec.get((bid, Op.ACTION))
            if step is None:
                res = await self._call(gid, bid, Op.ACTION)
                if res not in (Outcome.SUCCESS, Outcome.FAILURE):
                    return res  # ERROR or ONGOING, not recorded: the resume runs it again
                step = ((Status.SUCCEED, f"{bid}:{run}@{self.w.t()}".encode())
                        if res is Outcome.SUCCESS else (Status.FAILED, b"failed for good"))
                point()
                if not await self._record(gid, bid, Op.ACTION, step, rng):
                    return Outcome.ERROR
            if step[0] is Status.FAILED:
                failed = True
                break
            results.append(step[1])
            done.append(bid)
        phase = Op.ROLLBACK if failed else Op.COMMIT
        todo = done if failed else [b for b in done if b in commit_steps(spec)]
        for bid in reversed(todo):
            point()
            if (bid, phase) in rec:
                continue
            res = await self._call(gid, bid, phase)
            if res is not Outcome.SUCCESS:  # a second phase must succeed: resumed later
                return Outcome.ONGOING if res is Outcome.ONGOING else Outcome.ERROR
            point()
            if not await self._record(gid, bid, phase, (Status.SUCCEED, b""), rng):
                return Outcome.ERROR
        point()
        final = Status.FAILED if failed else Status.SUCCEED
        if not await self._submit(gid, spec, rng, final, results):
            return Outcome.ERROR
        return Outcome.FAILURE if failed else Outcome.SUCCESS

    def _body(self, gid: str, spec: TxSpec) -> dict[str, object]:
        custom = {"name": WF_NAME,
                  "data": base64.b64encode(spec.seed.to_bytes(8, "big")).decode()}
        # a timeout_to_fail never fails a prepared workflow: only its own code does
        return {"gid": gid, "trans_type": "workflow", "custom_data": json.dumps(custom),
                "query_prepared": WF_CALLBACK, "timeout_to_fail": spec.timeout_to_fail}

    async def _prepare(self, gid: str, spec: TxSpec, rng: random.Random, client: bool
                       ) -> tuple[Transaction, list[Branch]] | None:
        req = check_trans(parse_trans_body(self._body(gid, spec)), Verb.PREPARE_WORKFLOW,
                          self.w.limits)
        for _ in range(3 if client else 1):
            asked = self.w.now()
            res, got = await self.w.clients.ask(rng, lambda e: e.prepare_workflow(req))
            self.w.trace.append(f"{self.w.t()} app {gid} prepareWorkflow {res}")
            if got is not None:
                if client:
                    self.w.out.acked.add(gid)
                self._check_recorded(gid, asked, got[1])
                return got
            await asyncio.sleep(rng.uniform(0.2, 2.0))
        return None

    def _check_recorded(self, gid: str, asked: float, branches: list[Branch]) -> None:
        """Recorded steps never change, and none recorded before the question is missing."""
        answered = {(b.branch_id, b.op): (b.status, b.data) for b in branches}
        for (g, bid, op), (rec, at) in self.w.out.recorded.items():
            if g != gid:
                continue
            now = answered.get((bid, op))
            if now is None and at < asked:
                self.w.violations.append(f"{gid}: step {bid} {op} recorded at {at:.3f}, "
                                         f"missing from prepareWorkflow at {asked:.3f}")
            elif now is not None and now != rec:
                self.w.violations.append(f"{gid}: step {bid} {op} recorded {rec}, now {now}")

    async def _call(self, gid: str, bid: str, op: Op) -> Outcome:
        res = await self.w.net.call(BranchCall(URL + op.value, gid, TransType.WORKFLOW, bid,
                                               op, b"{}", timeout=2.0))
        self.w.trace.append(f"{self.w.t()} app {gid} {bid} {op} {res.outcome}")
        return res.outcome

    async def _record(self, gid: str, bid: str, op: Op, step: Recorded,
                      rng: random.Random) -> bool:
        reg = parse_registration({"gid": gid, "trans_type": "workflow", "branch_id": bid,
                                  "op": op.value, "status": step[0].value,
                                  "data": step[1].decode()})
        res = await self.w.clients.api(rng, lambda e: e.register_branch(reg))
        self.w.trace.append(f"{self.w.t()} app {gid} record {bid} {op} {step[0]} {res}")
        if res != "ok":
            return False
        key = (gid, bid, op)
        before = self.w.out.recorded.get(key)
        if before is not None and before[0] != step:
            self.w.violations.append(f"{gid}: step {bid} {op} recorded twice: "
                                     f"{before[0]}, then {step}")
        self.w.out.recorded.setdefault(key, (step, self.w.now()))
        return True

    async def _submit(self, gid: str, spec: TxSpec, rng: random.Random, status: Status,
                      results: list[bytes]) -> bool:
        body = {"gid": gid, "trans_type": "workflow",
                "req_extra": {"status": status.value, "result": result_of(results),
                              "rollback_reason": "a step failed" if status is Status.FAILED
                              else ""}}
        req = check_trans(parse_trans_body(body), Verb.SUBMIT, self.w.limits)
        for again in range(2 if spec.repeat else 1):
            res = await self.w.clients.api(rng, lambda e: e.submit(req))
            self.w.trace.append(f"{self.w.t()} app {gid} submit {status}"
                                f"{' again' if again else ''} {res}")
            if res != "ok":
                return False
        return True
