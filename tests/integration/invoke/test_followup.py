"""Followup (issue 10): the next call of a sequential run sent from the pool's callback the
moment the current call answers SUCCESS, against real servers: it goes out only on a
success, only when the run says it is ready, only to the same host, on the same
connection, and its result reaches whoever awaits it; a stale connection is retried once,
a timeout is an error result, and an unclaimed one still gives its connection back."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import pytest
from aiohttp import web

from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall, CallResult, Followup
from dtmx.invoke.http_invoker import HttpInvoker
from tests.integration.invoke.test_http1_raw_server import OK, Raw, Script, raw_server
from tests.support.util import free_port

__all__ = ["raw_server"]  # the fixture, used here too


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a plain condition on the loop (the pool's work happens between the polls)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@dataclass
class Branch:
    """An aiohttp branch whose answers follow `script` (by branch_id), recording arrivals."""

    base: str = ""
    script: dict[str, str] = field(default_factory=dict)
    arrived: list[str] = field(default_factory=list)
    peers: set[int] = field(default_factory=set)
    active: int = 0
    max_active: int = 0


def _app(b: Branch) -> web.Application:
    async def handle(req: web.Request) -> web.Response:
        bid = req.query["branch_id"]
        b.arrived.append(bid)
        transport = req.transport
        if transport is not None:
            b.peers.add(transport.get_extra_info("peername")[1])
        b.active += 1
        b.max_active = max(b.max_active, b.active)
        try:
            what = b.script.get(bid, "SUCCESS")
            if what.startswith("SLEEP"):
                await asyncio.sleep(float(what.split(":")[1]))
                what = "SUCCESS"
            status = {"SUCCESS": 200, "FAILURE": 409, "ONGOING": 425}.get(what, 500)
            return web.json_response({"dtm_result": what}, status=status)
        finally:
            b.active -= 1

    app = web.Application()
    app.router.add_route("*", "/b", handle)
    return app


@pytest.fixture
async def branch_factory() -> AsyncIterator[Callable[[], Awaitable[Branch]]]:
    runners: list[web.AppRunner] = []

    async def start() -> Branch:
        b = Branch()
        runner = web.AppRunner(_app(b))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        b.base = f"http://127.0.0.1:{port}"
        return b

    yield start
    for r in runners:
        await r.cleanup()


@pytest.fixture
async def branch(branch_factory: Callable[[], Awaitable[Branch]]) -> Branch:
    return await branch_factory()


@pytest.fixture
async def invoker() -> AsyncIterator[HttpInvoker]:
    inv = HttpInvoker()
    yield inv
    await inv.close()


def _call(base: str, bid: str, then: Followup | None = None, timeout: float = 3.0
          ) -> BranchCall:
    return BranchCall(url=f"{base}/b", gid="g", trans_type="saga", branch_id=bid,  # type: ignore[arg-type]
                      op="action", payload=b"{}", timeout=timeout, then=then)


class Ready:
    """A run's side of a Followup: says yes (or no) and counts the questions."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.answer


async def _then(inv: HttpInvoker, f: Followup) -> CallResult:
    """What the run does with a planned call: hand it on, sent already or not."""
    assert f.call is not None
    call = f.call if f.sent is None else replace(f.call, sent=f.sent)
    return await inv.call(call)


async def test_sent_on_success_on_the_same_connection(branch: Branch,
                                                      invoker: HttpInvoker) -> None:
    ready = Ready()
    f = Followup(ready)
    f.call = _call(branch.base, "02")
    assert (await invoker.call(_call(branch.base, "01", f))).outcome is Outcome.SUCCESS
    # it went out before anyone asked for it: the branch has it (or will, without help)
    assert f.sent is not None and ready.asked == 1
    await _until(lambda: branch.arrived == ["01", "02"])
    assert (await _then(invoker, f)).outcome is Outcome.SUCCESS
    assert branch.arrived == ["01", "02"]  # awaited, not sent again
    assert len(branch.peers) == 1 and branch.max_active == 1
    await _until(lambda: invoker.client.stats().idle == 1)


async def test_a_chain_of_followups(branch: Branch, invoker: HttpInvoker) -> None:
    calls = [_call(branch.base, f"{i:02d}", Followup(Ready())) for i in range(1, 6)]
    for a, b in itertools.pairwise(calls):
        assert a.then is not None
        a.then.call = b
    assert (await invoker.call(calls[0])).outcome is Outcome.SUCCESS
    for a in calls[:-1]:
        assert a.then is not None
        await _until(lambda a=a: a.then is not None and a.then.sent is not None)
        assert (await _then(invoker, a.then)).outcome is Outcome.SUCCESS
    assert branch.arrived == ["01", "02", "03", "04", "05"]
    assert len(branch.peers) == 1 and branch.max_active == 1


@pytest.mark.parametrize("answer", ["FAILURE", "ONGOING", "ERROR"])
async def test_not_sent_unless_the_answer_is_a_success(branch: Branch, invoker: HttpInvoker,
                                                       answer: str) -> None:
    branch.script["01"] = answer
    ready = Ready()
    f = Followup(ready)
    f.call = _call(branch.base, "02")
    res = await invoker.call(_call(branch.base, "01", f))
    assert res.outcome is Outcome[answer]
    assert f.sent is None and ready.asked == 0
    await asyncio.sleep(0.05)
    assert branch.arrived == ["01"]


async def test_not_sent_when_the_run_is_not_ready_or_has_not_planned(
        branch: Branch, invoker: HttpInvoker) -> None:
    no = Ready(False)
    f = Followup(no)
    f.call = _call(branch.base, "02")
    assert (await invoker.call(_call(branch.base, "01", f))).outcome is Outcome.SUCCESS
    assert f.sent is None and no.asked == 1
    unplanned = Followup(Ready())  # call never set: nothing to send
    assert (await invoker.call(_call(branch.base, "03", unplanned))).outcome is Outcome.SUCCESS
    await asyncio.sleep(0.05)
    assert branch.arrived == ["01", "03"]


async def test_to_another_host_on_an_idle_connection_only(
        branch_factory: Callable[[], Awaitable[Branch]], invoker: HttpInvoker) -> None:
    one, two = await branch_factory(), await branch_factory()
    f = Followup(Ready())
    f.call = _call(two.base, "02")
    assert (await invoker.call(_call(one.base, "01", f))).outcome is Outcome.SUCCESS
    assert f.sent is None  # no idle connection to `two`: opening one is not for a callback
    assert (await _then(invoker, f)).outcome is Outcome.SUCCESS  # the ordinary way
    # now `two` has an idle connection: a saga going back and forth follows at once
    f = Followup(Ready())
    f.call = _call(two.base, "04")
    assert (await invoker.call(_call(one.base, "03", f))).outcome is Outcome.SUCCESS
    assert f.sent is not None
    assert (await _then(invoker, f)).outcome is Outcome.SUCCESS
    assert (one.arrived, two.arrived) == (["01", "03"], ["02", "04"])
    assert (len(one.peers), len(two.peers)) == (1, 1)
    await _until(lambda: invoker.client.stats().idle == 2)


async def test_a_followup_timeout_is_an_error_result(branch: Branch,
                                                     invoker: HttpInvoker) -> None:
    branch.script["02"] = "SLEEP:1"
    f = Followup(Ready())
    f.call = _call(branch.base, "02", timeout=0.2)
    assert (await invoker.call(_call(branch.base, "01", f))).outcome is Outcome.SUCCESS
    res = await _then(invoker, f)
    assert res.outcome is Outcome.ERROR and "timeout after 0.2s" in res.detail
    assert invoker.client.stats().idle == 0  # a timed-out connection is not reused


async def test_unclaimed_followup_gives_its_connection_back(branch: Branch,
                                                            invoker: HttpInvoker) -> None:
    f = Followup(Ready())
    f.call = _call(branch.base, "02")
    assert (await invoker.call(_call(branch.base, "01", f))).outcome is Outcome.SUCCESS
    # the run stopped and never asks for it: the exchange still ends and frees the connection
    await _until(lambda: invoker.client.stats().idle == 1)
    assert f.sent is not None
    sent = f.sent
    await _until(lambda: isinstance(sent, asyncio.Future) and sent.done())
    assert (await invoker.call(_call(branch.base, "03"))).outcome is Outcome.SUCCESS
    assert len(branch.peers) == 1


async def test_followup_on_a_stale_connection_is_retried_once(
        raw_server: Callable[[Script], Awaitable[Raw]], invoker: HttpInvoker) -> None:
    async def script(conn: int, n: int, w: asyncio.StreamWriter) -> bool:
        if n == 1:
            w.write(OK)
            return True
        return False  # closes without answering the follow-up sent on this connection

    raw = await raw_server(script)
    base = f"http://127.0.0.1:{raw.port}"
    f = Followup(Ready())
    f.call = _call(base, "02")
    assert (await invoker.call(_call(base, "01", f))).outcome is Outcome.SUCCESS
    assert f.sent is not None
    res = await _then(invoker, f)
    assert res.outcome is Outcome.SUCCESS, res.detail
    assert (raw.connections, raw.requests) == (2, 3)  # 02 read on the first, then again
