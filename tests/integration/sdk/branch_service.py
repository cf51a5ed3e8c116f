"""A tiny branch service for SDK tests: switchable results, counted calls, own thread.

It runs its own event loop in a thread so that both async tests and tests of the blocking
API (which block the test's thread) can be served.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from dtmx.client import DtmClient, Tcc
from tests.support.util import free_port

BODIES = {
    200: {"dtm_result": "SUCCESS"},
    409: {"dtm_result": "FAILURE", "message": "switched to fail"},
    425: {"dtm_result": "ONGOING", "message": "switched to ongoing"},
    500: {"message": "switched to error"},
}


@dataclass(frozen=True)
class Call:
    """One request a branch endpoint received."""

    name: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    at: float


class BranchService:
    """Endpoints `/<name>`; `results[name]` = HTTP status (default 200). `dtm` = server URL."""

    def __init__(self, dtm: str) -> None:
        self.dtm = dtm
        self.port = free_port()
        self.results: dict[str, int] = {}
        self.calls: list[Call] = []
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._client: DtmClient | None = None

    def url(self, name: str) -> str:
        """The URL of endpoint `name`."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def count(self, name: str) -> int:
        with self._lock:
            return self.counts[name]

    def called(self, name: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.name == name]

    def names(self) -> list[str]:
        with self._lock:
            return [c.name for c in self.calls]

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        with self._lock:
            self.calls.append(
                Call(name, dict(request.query), body, dict(request.headers), time.monotonic())
            )
            self.counts[name] += 1
            status = self.results.get(name, 200)
        if name.startswith("nested") and status == 200:
            # A try that is itself a TCC: it registers and tries sub-branches 0101, 0102.
            assert self._client is not None
            inner = Tcc.from_query(self._client, request.query)
            for i in (1, 2):
                await inner.call_branch(
                    {"sub": i}, self.url(f"subtry{i}"), self.url(f"subconfirm{i}"),
                    self.url(f"subcancel{i}"),
                )
        return web.json_response(BODIES[status], status=status)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{name}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._client = DtmClient(self.dtm)

    async def _stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> BranchService:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
