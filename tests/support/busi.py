"""An example branch service (like DTM's `busi`): a transfer out of one account and into
another, as saga actions/compensations, TCC try/confirm/cancel and msg actions.

Its answers can be switched per route (SUCCESS, FAILURE, ONGOING, ERROR, or a delay), and it
keeps what it *applied* separately from what it was *called* with: applying is idempotent
per (gid, branch_id, op) and follows the barrier rules (a compensation whose action never
ran is skipped; an action arriving after its compensation is skipped), so tests can check
that retries and crashes never apply an effect twice. Run it alone with
`python -m tests.support.busi --port 8081`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

ROUTES = (
    "TransOut", "TransOutRevert", "TransIn", "TransInRevert",
    "TransOutTry", "TransOutConfirm", "TransOutCancel",
    "TransInTry", "TransInConfirm", "TransInCancel",
    "QueryPrepared", "Msg", "Workflow",
)
ORIGIN = {"compensate": "action", "cancel": "try", "rollback": "action"}


@dataclass
class BusiState:
    """Switchable results and what happened; guarded by a lock (tests read from threads)."""

    results: dict[str, list[str]] = field(default_factory=dict)
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    applied: Counter[tuple[str, str]] = field(default_factory=Counter)
    done: set[tuple[str, str, str]] = field(default_factory=set)
    headers: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    bodies: dict[tuple[str, str], bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    #: when each call of (route, gid) arrived (monotonic seconds): retry spacing is visible
    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # calls of the same (route, gid) that overlapped in time: two workers on one transaction
    in_flight: Counter[tuple[str, str]] = field(default_factory=Counter)
    overlaps: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, route: str, *results: str) -> None:
        """Answer the next calls of `route` with `results` in turn; the last one sticks."""
        with self.lock:
            self.results[route] = list(results)

    def next_result(self, route: str) -> str:
        with self.lock:
            queue = self.results.get(route)
            if not queue:
                return "SUCCESS"
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def record(self, route: str, q: dict[str, str], headers: dict[str, str], body: bytes) -> None:
        gid = q.get("gid", "")
        with self.lock:
            self.calls[(route, gid)] += 1
            self.headers[(route, gid)] = headers
            self.bodies[(route, gid)] = body
            self.requests.append((route, q.get("method", ""), q))
            self.times.setdefault((route, gid), []).append(time.monotonic())
            if self.in_flight[(route, gid)]:
                self.overlaps.append((route, gid))
            self.in_flight[(route, gid)] += 1

    def finish(self, route: str, q: dict[str, str]) -> None:
        with self.lock:
            self.in_flight[(route, q.get("gid", ""))] -= 1

    def apply(self, route: str, q: dict[str, str]) -> None:
        """Apply the effect once, with the barrier's rules."""
        gid, bid, op = q.get("gid", ""), q.get("branch_id", ""), q.get("op", "")
        with self.lock:
            origin = ORIGIN.get(op)
            if origin and (gid, bid, origin) not in self.done:
                # null compensation: remember it so a late action is refused (hanging)
                self.done.add((gid, bid, origin))
                self.done.add((gid, bid, op))
                return
            if (gid, bid, op) in self.done:
                return
            self.done.add((gid, bid, op))
            self.applied[(route, gid)] += 1

    def count(self, route: str, gid: str) -> int:
        with self.lock:
            return self.calls[(route, gid)]

    def gaps(self, route: str, gid: str) -> list[float]:
        """Seconds between consecutive calls of `route` for `gid`."""
        with self.lock:
            t = self.times.get((route, gid), [])
            return [b - a for a, b in itertools.pairwise(t)]

    def applied_count(self, route: str, gid: str) -> int:
        with self.lock:
            return self.applied[(route, gid)]


def make_app(state: BusiState) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        route = request.match_info["route"]
        body = await request.read()
        q = dict(request.query)
        q["method"] = request.method
        state.record(route, q, dict(request.headers), body)
        try:
            return await answer(route, q)
        finally:
            state.finish(route, q)

    async def answer(route: str, q: dict[str, str]) -> web.Response:
        result = state.next_result(route)
        if result.startswith("SLEEP"):  # SLEEP:<seconds>, then success
            await asyncio.sleep(float(result.split(":", 1)[1]))
            result = "SUCCESS"
        if result == "SUCCESS":
            state.apply(route, q)
            return web.json_response({"dtm_result": "SUCCESS"})
        if result == "FAILURE":
            return web.json_response({"dtm_result": "FAILURE", "message": "refused"}, status=409)
        if result == "ONGOING":
            return web.json_response({"dtm_result": "ONGOING"}, status=425)
        return web.json_response({"message": "busi error"}, status=500)

    app = web.Application()
    app.router.add_route("*", "/api/busi/{route}", handle)
    return app


class BusiServer:
    """The busi app on its own event loop in a background thread (for sync tests)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.state = BusiState()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/busi"

    def start(self) -> BusiServer:
        self._thread.start()

        async def up() -> None:
            self._runner = web.AppRunner(make_app(self.state), access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(up(), self._loop).result(10)
        return self

    def __enter__(self) -> BusiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main() -> None:
    p = argparse.ArgumentParser(description="dtmx example branch service")
    p.add_argument("--port", type=int, default=8081)
    args = p.parse_args()
    web.run_app(make_app(BusiState()), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
