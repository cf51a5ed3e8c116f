"""A dtmx server with another HTTP stack in place of its own, for bench/http_stacks.py.

`python -m bench.stack_server CONF --api own|uvicorn|granian-asgi|granian-rsgi
--client own|aiohttp|httpx`: the same store, engine, routes and handlers as `dtmx serve`;
only the code that speaks HTTP changes.

- api: the route table (`HttpServer.dispatch`) behind a raw ASGI app served by uvicorn's
  httptools protocol, or behind granian (ASGI, and its own RSGI interface), in the same
  uvloop as the engine. The own server then listens on a spare port, unused.
- client: branch calls through aiohttp (one session, tuned connector, no cookie jar, no
  decompression) or httpx (one AsyncClient, HTTP/1.1, pooled), with DTM's result rule.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
from typing import Any
from urllib.parse import parse_qsl

import dtmx.server
from bench.procs import free_port
from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall, CallResult
from dtmx.invoke.http_invoker import classify
from dtmx.net.api_server import HttpServer, Request
from dtmx.net.branch_pool import PoolStats
from dtmx.settings import load


class _NoStats:
    def stats(self) -> PoolStats:
        return PoolStats(open=0, idle=0, connects=0)


class LibraryInvoker:
    """Branch calls through aiohttp or httpx, with DTM's request and result rule."""

    def __init__(self, kind: str, **_: Any) -> None:
        self.kind = kind
        self.client = _NoStats()
        self._session: Any = None

    def _get(self) -> Any:
        if self._session is None:
            if self.kind == "aiohttp":
                import aiohttp

                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=30,
                                                   ttl_dns_cache=None, use_dns_cache=True),
                    cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                    skip_auto_headers=("User-Agent",))
            else:
                import httpx

                self._session = httpx.AsyncClient(
                    limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
                    follow_redirects=False)
        return self._session

    async def call(self, call: BranchCall) -> CallResult:
        if not call.url:
            return CallResult(Outcome.SUCCESS)
        params = {"gid": call.gid, "trans_type": call.trans_type,
                  "branch_id": call.branch_id, "op": call.op}
        post = bool(call.payload) or call.force_post
        headers = {"Content-Type": "application/json", **call.headers}
        s = self._get()
        try:
            if self.kind == "aiohttp":
                import aiohttp

                async with s.request("POST" if post else "GET", call.url, params=params,
                                     data=call.payload if post else None, headers=headers,
                                     allow_redirects=False,
                                     timeout=aiohttp.ClientTimeout(total=call.timeout)) as r:
                    status, body = r.status, (await r.read()).decode("utf-8", "replace")
            else:
                r = await s.request("POST" if post else "GET", call.url, params=params,
                                    content=call.payload if post else None, headers=headers,
                                    timeout=call.timeout)
                status, body = r.status_code, r.text
        except Exception as e:
            return CallResult(Outcome.ERROR, f"{type(e).__name__}: {e}")
        outcome = classify(status, body)
        return CallResult(outcome, "" if outcome is Outcome.SUCCESS else f"{status} {body}")

    async def close(self) -> None:
        if self._session is not None:
            await (self._session.close() if self.kind == "aiohttp" else self._session.aclose())


def _request(method: str, path: str, query: bytes, headers: Any, body: bytes) -> Request:
    q = dict(reversed(parse_qsl(query.decode("utf-8", "replace"), keep_blank_values=True)))
    h = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
    return Request(method, path, q, h, body)


def asgi_app(http: HttpServer) -> Any:
    """The route table as a raw ASGI application (no framework in between)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        req = _request(scope["method"], scope["path"], scope["query_string"],
                       scope["headers"], b"".join(chunks))
        resp = await http.dispatch(req)
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(b"content-type", resp.content_type.encode())]})
        await send({"type": "http.response.body", "body": resp.body})

    return app


def rsgi_app(http: HttpServer) -> Any:
    """The route table as a granian RSGI application."""

    async def app(scope: Any, proto: Any) -> None:
        body = await proto()
        req = _request(scope.method, scope.path, scope.query_string.encode(),
                       [(k.encode(), v.encode()) for k, v in scope.headers.items()], body)
        resp = await http.dispatch(req)
        proto.response_bytes(resp.status, [("content-type", resp.content_type)], resp.body)

    return app


async def main(conf: str, api: str, client: str) -> None:
    settings = load(conf)
    if client != "own":
        dtmx.server.HttpInvoker = lambda **kw: LibraryInvoker(client)  # type: ignore[misc,assignment]
    port = settings.HttpPort
    if api != "own":
        settings = dataclasses.replace(settings, HttpPort=free_port())
    server = dtmx.server.Server(settings)
    await server.start()
    http = server._http
    assert http is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner: Any = None
    if api == "uvicorn":
        import uvicorn

        config = uvicorn.Config(asgi_app(http), host="127.0.0.1", port=port, http="httptools",
                                loop="none", lifespan="off", access_log=False,
                                log_level="warning")
        runner = uvicorn.Server(config)
        runner.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(runner.serve())
    elif api.startswith("granian"):
        from granian.constants import Interfaces
        from granian.server.embed import Server as Granian

        rsgi = api == "granian-rsgi"
        runner = Granian(rsgi_app(http) if rsgi else asgi_app(http), address="127.0.0.1",
                         port=port, interface=Interfaces.RSGI if rsgi else Interfaces.ASGINL,
                         log_enabled=False, websockets=False)
        task = asyncio.create_task(runner.serve())
    try:
        await stop.wait()
    finally:
        if runner is not None:
            if api == "uvicorn":
                runner.should_exit = True
            else:
                runner.stop()
            await asyncio.wait_for(task, 10)
        await server.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("conf")
    p.add_argument("--api", default="own")
    p.add_argument("--client", default="own")
    a = p.parse_args()
    import uvloop

    uvloop.run(main(a.conf, a.api, a.client))
