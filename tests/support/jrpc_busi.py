"""A JSON-RPC branch service, and a raw JSON-RPC client of the server (no SDK involved).

The service answers `POST /api/json-rpc` as DTM's test busi does: `results[method]` picks
the answer (SUCCESS by default; FAILURE / ONGOING are DTM's codes -32901 / -32902; OTHER is
an error of another code); `once[method]` is a list of answers used up first. Every request
is recorded with its method and params.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import requests
from aiohttp import web

from tests.support.util import free_port

CODES = {"FAILURE": -32901, "ONGOING": -32902, "OTHER": -23977}


def rpc(url: str, method: str, params: Any = None, *, rid: Any = "no-use",
        headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One raw JSON-RPC 2.0 call; the answer must be HTTP 200 with a JSON body."""
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
    r = requests.post(url, json=body, timeout=10, headers=headers)
    assert r.status_code == 200, (r.status_code, r.text)
    out: dict[str, Any] = r.json()
    return out


class JsonRpcBranches:
    """The branch service in its own thread and loop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.results: dict[str, str] = {}
        self.once: dict[str, list[str]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def url(self, method: str) -> str:
        return f"http://127.0.0.1:{self.port}/api/json-rpc?method={method}"

    def methods(self, gid: str) -> list[str]:
        with self._lock:
            return [m for m, p in self.calls if p.get("gid") == gid]

    def params(self, gid: str, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [p for m, p in self.calls if p.get("gid") == gid and m == method]

    async def _handle(self, request: web.Request) -> web.Response:
        req = await request.json()
        method, params = req["method"], req["params"]
        with self._lock:
            self.calls.append((method, params))
            pending = self.once.get(method)
            result = pending.pop(0) if pending else self.results.get(method, "SUCCESS")
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": req["id"], "error": None}
        if result == "SUCCESS":
            out["result"] = {"dtm_result": "SUCCESS"}
        else:
            out["error"] = {"code": CODES[result], "message": f"switched to {result}"}
        return web.json_response(out)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/json-rpc", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> JsonRpcBranches:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def new_gid(label: str) -> str:
    return f"jrpc-{label}-{uuid.uuid4().hex[:12]}"
