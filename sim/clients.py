"""The clients of a simulated run: each drives one transaction through an engine's verbs,
as the API would, from a node it picks among the live ones; answers may be lost."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from dtmx.core.limits import Limits
from dtmx.core.models import Op, Outcome, TransType
from dtmx.core.request import (
    TransRequest,
    Verb,
    check_trans,
    parse_registration,
    parse_trans_body,
)
from dtmx.engine import Engine
from dtmx.errors import DtmxError
from dtmx.invoke.base import BranchCall
from sim.config import TxSpec
from sim.net import QUERY_URL

if TYPE_CHECKING:
    from sim.world import World

T = TypeVar("T")
CLIENT_TIMEOUT = 5.0
URL = "sim://bank/"
#: the server's default limits, checked as the API would
LIMITS = Limits()


class Client:
    """The clients of one world (one object; each transaction's client is a task)."""

    def __init__(self, world: World) -> None:
        self.w = world

    async def api(self, rng: random.Random, verb: Callable[[Engine], Awaitable[None]]) -> str:
        """One request to a live node: 'ok', 'error', or 'lost' (no answer)."""
        return (await self.ask(rng, verb))[0]

    async def ask(self, rng: random.Random, verb: Callable[[Engine], Awaitable[T]]
                  ) -> tuple[str, T | None]:
        """One request to a live node: ('ok', its answer), or ('error' | 'lost', None)."""
        while True:
            alive = [n for n in self.w.nodes if not (n.dead or n.stopping)]
            if alive:
                break
            await asyncio.sleep(0.5)
        node = alive[rng.randrange(len(alive))]
        task = asyncio.ensure_future(verb(node.engine))
        task.add_done_callback(self._server_error)
        done, _ = await asyncio.wait({task}, timeout=CLIENT_TIMEOUT)
        if not done:
            return "lost", None
        if task.exception() is not None:
            return "error", None
        if rng.random() < self.w.faults.lose_reply:
            return "lost", None
        return "ok", task.result()

    def _server_error(self, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            return
        e = task.exception()
        if e is not None and not isinstance(e, DtmxError):
            self.w.violations.append(f"the engine raised {type(e).__name__}: {e} (a 500)")

    async def run(self, spec: TxSpec) -> None:
        """Be the client of `spec`, from its start time to its last verb."""
        await asyncio.sleep(spec.start)
        gid = gid_of(spec)
        self.w.out.kinds[gid] = spec
        try:
            await self._client(gid, spec)
        except Exception as e:  # the simulation's own bug, or an API it no longer matches
            self.w.violations.append(f"client {gid} crashed: {type(e).__name__}: {e}")
        finally:
            self.w.clients_done += 1

    async def force_stop(self, spec: TxSpec) -> None:
        """An operator's `forceStop` of `spec`'s transaction, whatever it is doing then."""
        await asyncio.sleep(spec.start + spec.force_stop_at)
        gid = gid_of(spec)
        self.w.stopping.add(gid)
        res = await self.api(self.w.rng(f"stop {gid}"), lambda e: e.force_stop(gid))
        self.w.trace.append(f"{self.w.t()} operator {gid} force-stop {res}")
        if res == "ok":
            self.w.out.stop_acked.add(gid)

    async def _client(self, gid: str, spec: TxSpec) -> None:
        rng = random.Random(spec.seed)
        if spec.kind == "saga":
            await self._saga(gid, spec, rng)
        elif spec.kind in ("tcc", "xa"):
            await self._registered(gid, spec, rng)
        elif spec.kind == "workflow":
            await self.w.workflows.client(gid, spec, rng)
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
        return check_trans(parse_trans_body(body), verb, LIMITS)

    async def _until_ok(self, rng: random.Random, gid: str, spec: TxSpec, verb: Verb,
                        tries: int = 3) -> bool:
        for _ in range(tries):
            req = self._request(gid, spec, verb)  # a fresh request, as parsed from the wire
            fn = {Verb.PREPARE: Engine.prepare, Verb.SUBMIT: Engine.submit,
                  Verb.ABORT: Engine.abort}[verb]
            res = await self.api(rng, lambda e, fn=fn, req=req: fn(e, req))  # type: ignore[misc]
            self.w.trace.append(f"{self.w.t()} client {gid} {verb} {res}")
            if res == "ok":
                if spec.repeat:  # as after an answer lost on the way back
                    again = self._request(gid, spec, verb)
                    res = await self.api(rng, lambda e, fn=fn, req=again: fn(e, req))  # type: ignore[misc]
                    self.w.trace.append(f"{self.w.t()} client {gid} {verb} again {res}")
                return True
            await asyncio.sleep(rng.uniform(0.2, 2.0))
        return False

    async def _saga(self, gid: str, spec: TxSpec, rng: random.Random) -> None:
        for i in spec.failing:
            self.w.bank.failing.add((gid, f"{i + 1:02d}"))
        if spec.crash_at == 0:
            return
        if await self._until_ok(rng, gid, spec, Verb.SUBMIT):
            self.w.out.acked.add(gid)

    async def _registered(self, gid: str, spec: TxSpec, rng: random.Random) -> None:
        """TCC: register, then try; XA: register, then the branch's local prepare (its
        ACTION here); submit if every first phase succeeded, else abort."""
        tt = TransType(spec.kind)
        urls = ({"cancel": URL + "cancel", "confirm": URL + "confirm"} if tt is TransType.TCC
                else {"url": URL + "xa"})
        first = Op.TRY if tt is TransType.TCC else Op.ACTION
        for i in spec.failing:
            self.w.bank.failing.add((gid, f"{i + 1:02d}"))
        if not await self._until_ok(rng, gid, spec, Verb.PREPARE):
            return
        self.w.out.acked.add(gid)
        registered = self.w.out.registered.setdefault(gid, [])
        ok = True
        for i in range(spec.steps):
            await asyncio.sleep(rng.uniform(0.0, 2.5))  # near the timeout, on purpose
            if spec.crash_at == i:
                return
            bid = f"{i + 1:02d}"
            reg = parse_registration({"gid": gid, "trans_type": spec.kind, "branch_id": bid,
                                      "data": "{}", **urls})
            res = await self.api(rng, lambda e, reg=reg: e.register_branch(reg))  # type: ignore[misc]
            self.w.trace.append(f"{self.w.t()} client {gid} register {bid} {res}")
            if res != "ok":
                ok = False
                break
            registered.append(bid)
            tried = await self.w.net.call(BranchCall(URL + "try", gid, tt, bid, first, b"{}",
                                                   timeout=2.0))
            self.w.trace.append(f"{self.w.t()} client {gid} try {bid} {tried.outcome}")
            if tried.outcome is not Outcome.SUCCESS:
                ok = False
                break
        if spec.crash_at == spec.steps:
            return
        await self._until_ok(rng, gid, spec, Verb.SUBMIT if ok else Verb.ABORT)

    async def _msg(self, gid: str, spec: TxSpec, rng: random.Random) -> None:
        if not await self._until_ok(rng, gid, spec, Verb.PREPARE):
            return
        self.w.out.acked.add(gid)
        await asyncio.sleep(rng.uniform(0.0, 8.0))  # near the timeout, on purpose
        if spec.crash_at == 0:
            return
        committed = rng.random() < 0.8 and self.w.bank.msg_commit(gid)
        if spec.crash_at == 1:
            return
        await self._until_ok(rng, gid, spec, Verb.SUBMIT if committed else Verb.ABORT)


def gid_of(spec: TxSpec) -> str:
    """The gid of `spec`'s transaction: stable when others are removed."""
    return f"{spec.kind[0]}{spec.seed % 10**6}"
