"""The business side of every benchmark: empty branch handlers in a process of their own.

HTTP (aiohttp, uvloop when available) and, with --grpc-port, gRPC (grpc.aio, any method).
A branch path `/fin/<n>/<name>` (HTTP) or method `Fin<n>_<name>` (gRPC) marks a transaction
complete for a gid the n-th time it is called for that gid; every other path just answers
SUCCESS. Completions are kept as (gid, monotonic time) and handed out by a long poll,
`GET /done?after=i`, so the bench learns of them at once without polling the dtmx server.
`time.monotonic` is CLOCK_MONOTONIC, shared by all processes, so the bench subtracts its own
submit time from the completion time to get latency.

    python -m bench.branches --port 8001 [--grpc-port 8002]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import orjson
from aiohttp import web

SUCCESS = b'{"dtm_result":"SUCCESS"}'


class Completions:
    """Gids whose final branch ran, in order, with a wake-up for long polls."""

    def __init__(self) -> None:
        self.done: list[tuple[str, float]] = []
        self._seen: dict[str, int] = {}
        self._cond = asyncio.Condition()
        self.calls = 0

    def hit(self, gid: str, need: int) -> None:
        self.calls += 1
        n = self._seen.get(gid, 0) + 1
        if n < need:
            self._seen[gid] = n
            return
        self._seen.pop(gid, None)
        self.done.append((gid, time.monotonic()))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def wait_after(self, after: int, timeout: float) -> list[tuple[str, float]]:
        if len(self.done) <= after:
            async with self._cond:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._cond.wait_for(lambda: len(self.done) > after), timeout
                    )
        return self.done[after:]

    def reset(self) -> None:
        self.done.clear()
        self._seen.clear()
        self.calls = 0


def http_app(c: Completions) -> web.Application:
    async def plain(request: web.Request) -> web.Response:
        await request.read()
        c.calls += 1
        return web.Response(body=SUCCESS, content_type="application/json")

    async def fin(request: web.Request) -> web.Response:
        await request.read()
        c.hit(request.query.get("gid", ""), int(request.match_info["n"]))
        return web.Response(body=SUCCESS, content_type="application/json")

    async def done(request: web.Request) -> web.Response:
        after = int(request.query.get("after", "0"))
        items = await c.wait_after(after, float(request.query.get("timeout", "1")))
        return web.Response(body=orjson.dumps(items), content_type="application/json")

    async def stats(_request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"done": len(c.done), "calls": c.calls}))

    async def reset(_request: web.Request) -> web.Response:
        c.reset()
        return web.Response(body=SUCCESS)

    app = web.Application()
    app.router.add_route("*", "/fin/{n}/{name}", fin)
    app.router.add_get("/done", done)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_route("*", "/b/{name}", plain)
    return app


async def start_grpc(c: Completions, port: int) -> Any:
    import grpc
    import grpc.aio

    class Handler(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            name = details.method.rsplit("/", 1)[-1]  # type: ignore[attr-defined]
            need = int(name[3:].split("_", 1)[0]) if name.startswith("Fin") else 0

            async def behave(_req: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
                if need:
                    gid = dict(context.invocation_metadata() or ()).get("dtm-gid", "")
                    c.hit(str(gid), need)
                else:
                    c.calls += 1
                return b""

            return grpc.unary_unary_rpc_method_handler(behave)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Handler(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def main(port: int, grpc_port: int) -> None:
    c = Completions()
    # before HTTP (the parent waits for HTTP only); keep a reference, or the server is
    # collected and shuts down
    grpc_server = await start_grpc(c, grpc_port) if grpc_port else None
    runner = web.AppRunner(http_app(c), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    await asyncio.Event().wait()
    del grpc_server


def run() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, default=0)
    a = p.parse_args()
    try:
        import uvloop

        uvloop.run(main(a.port, a.grpc_port))
    except ImportError:
        asyncio.run(main(a.port, a.grpc_port))


if __name__ == "__main__":
    run()
