"""HttpInvoker against real aiohttp web servers (and a few raw asyncio servers for the
misbehaving cases): DTM's calling contract over our own HTTP/1.1 client."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall
from dtmx.invoke.http_invoker import HttpInvoker, Router
from tests.support.util import aeventually, free_port


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Branches:
    base: str
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    active: int = 0
    max_active: int = 0


async def _start(app: web.Application, **kw: Any) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, **kw)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def _app(b: Branches) -> web.Application:
    async def record(req: web.Request) -> None:
        b.seen.append(Seen(req.method, req.path, dict(req.query), req.rel_url.raw_query_string,
                           dict(req.headers), await req.read()))

    async def ok(req: web.Request) -> web.Response:
        await record(req)
        return web.json_response({"dtm_result": "SUCCESS"})

    async def status(req: web.Request) -> web.Response:
        await record(req)
        return web.Response(status=int(req.match_info["code"]), text="no")

    async def text(req: web.Request) -> web.Response:
        return web.json_response({"dtm_result": req.match_info["word"]})

    async def chunked(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        for _ in range(50):
            await resp.write(b"x" * 4000)
        await resp.write(b"ONGOING")
        await resp.write_eof()
        return resp

    async def close(req: web.Request) -> web.Response:
        await record(req)
        resp = web.Response(text="ok")
        resp.force_close()
        return resp

    async def hold(req: web.Request) -> web.Response:
        b.active += 1
        b.max_active = max(b.max_active, b.active)
        try:
            await b.release.wait()
        finally:
            b.active -= 1
        return web.Response(text="ok")

    async def size(req: web.Request) -> web.Response:
        body = await req.read()
        return web.Response(text=f"{len(body)} {body[:1].decode()}")

    async def gz(req: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'{"dtm_result":"FAILURE"}'),
                            headers={"Content-Encoding": "gzip"})

    async def bomb(req: web.Request) -> web.Response:
        return web.Response(body=_bomb(), headers={"Content-Encoding": req.match_info["enc"]})

    async def redirect(req: web.Request) -> web.Response:
        await record(req)
        raise web.HTTPFound(req.query.get("to", "/ok"))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/bomb/{enc}", bomb)
    app.router.add_route("*", "/redirect", redirect)
    app.router.add_route("*", "/ok", ok)
    app.router.add_route("*", "/ok/{tail:.*}", ok)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/text/{word}", text)
    app.router.add_route("*", "/chunked", chunked)
    app.router.add_route("*", "/close", close)
    app.router.add_route("*", "/hold", hold)
    app.router.add_route("*", "/size", size)
    app.router.add_route("*", "/gzip", gz)
    return app


_BOMBS: list[bytes] = []


def _bomb() -> bytes:
    """gzip of 64 MiB of zeros: about 64 KiB on the wire."""
    if not _BOMBS:
        _BOMBS.append(gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=6))
    return _BOMBS[0]


_BIG_BOMBS: list[bytes] = []


def _big_bomb() -> bytes:
    """gzip of 256 MiB of zeros, about 256 KiB on the wire: more than a client reads ahead
    of its decoder, so the cap refuses it while the branch is still sending."""
    if not _BIG_BOMBS:
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        block = b"\0" * (1024 * 1024)
        _BIG_BOMBS.append(b"".join(c.compress(block) for _ in range(256)) + c.flush())
    return _BIG_BOMBS[0]


@pytest.fixture
async def branches() -> AsyncIterator[Branches]:
    b = Branches(base="")
    runner, port = await _start(_app(b))
    b.base = f"http://127.0.0.1:{port}"
    yield b
    b.release.set()
    await runner.cleanup()


@pytest.fixture
async def invoker() -> AsyncIterator[HttpInvoker]:
    inv = HttpInvoker()
    yield inv
    await inv.close()


def _call(url: str, payload: bytes = b'{"amount":30}', **kw: Any) -> BranchCall:
    base: dict[str, Any] = dict(gid="gid-1", trans_type="saga", branch_id="01", op="action")
    base.update(kw)
    return BranchCall(url=url, payload=payload, **base)


async def test_success_post_with_query_headers_and_body(
    branches: Branches, invoker: HttpInvoker
) -> None:
    res = await invoker.call(_call(branches.base + "/ok", headers={"X-Token": "t1"}))
    assert res.outcome is Outcome.SUCCESS and res.detail == ""
    s = branches.seen[-1]
    assert s.method == "POST"
    assert s.query == {"gid": "gid-1", "trans_type": "saga", "branch_id": "01", "op": "action"}
    assert s.headers["Content-Type"] == "application/json"
    assert s.headers["X-Token"] == "t1"
    assert s.body == b'{"amount":30}'


async def test_get_when_payload_empty_post_for_xa(
    branches: Branches, invoker: HttpInvoker
) -> None:
    assert (await invoker.call(_call(branches.base + "/ok", b""))).outcome is Outcome.SUCCESS
    assert branches.seen[-1].method == "GET" and branches.seen[-1].body == b""
    assert branches.seen[-1].headers["Content-Type"] == "application/json"
    res = await invoker.call(_call(branches.base + "/ok", b"", trans_type="xa", force_post=True))
    assert res.outcome is Outcome.SUCCESS
    assert branches.seen[-1].method == "POST" and branches.seen[-1].body == b""
    assert branches.seen[-1].headers["Content-Length"] == "0"


async def test_query_escaping_and_existing_query(
    branches: Branches, invoker: HttpInvoker
) -> None:
    gid = "g 1&x=y/é+%"
    url = branches.base + "/ok/a%20b?keep=1&sp=a%20b"
    assert (await invoker.call(_call(url, gid=gid))).outcome is Outcome.SUCCESS
    s = branches.seen[-1]
    assert s.path == "/ok/a b"
    assert s.query == {"keep": "1", "sp": "a b", "gid": gid, "trans_type": "saga",
                       "branch_id": "01", "op": "action"}
    assert s.raw_query.startswith("keep=1&sp=a%20b&gid=")


@pytest.mark.parametrize(
    ("path", "outcome", "detail"),
    [
        ("/status/409", Outcome.FAILURE, "409 no"),
        ("/status/425", Outcome.ONGOING, "425 no"),
        ("/status/500", Outcome.ERROR, "500 no"),
        ("/status/404", Outcome.ERROR, "404 no"),
        ("/text/ONGOING", Outcome.ONGOING, '200 {"dtm_result": "ONGOING"}'),
        ("/text/FAILURE", Outcome.FAILURE, '200 {"dtm_result": "FAILURE"}'),
        ("/gzip", Outcome.FAILURE, '200 {"dtm_result":"FAILURE"}'),
    ],
)
async def test_result_mapping(
    branches: Branches, invoker: HttpInvoker, path: str, outcome: Outcome, detail: str
) -> None:
    res = await invoker.call(_call(branches.base + path))
    assert (res.outcome, res.detail) == (outcome, detail)


async def test_connections_are_reused(branches: Branches, invoker: HttpInvoker) -> None:
    for _ in range(5):
        assert (await invoker.call(_call(branches.base + "/ok"))).outcome is Outcome.SUCCESS
    assert invoker.client.stats().connects == 1


async def test_chunked_response(branches: Branches, invoker: HttpInvoker) -> None:
    res = await invoker.call(_call(branches.base + "/chunked"))
    assert res.outcome is Outcome.ONGOING
    # and the connection is still good after a chunked answer
    assert (await invoker.call(_call(branches.base + "/ok"))).outcome is Outcome.SUCCESS
    assert invoker.client.stats().connects == 1


async def test_connection_close_is_honoured(branches: Branches, invoker: HttpInvoker) -> None:
    for _ in range(3):
        assert (await invoker.call(_call(branches.base + "/close"))).outcome is Outcome.SUCCESS
    assert invoker.client.stats().connects == 3
    assert invoker.client.stats().idle == 0


async def test_server_closing_idle_keepalive_between_calls(invoker: HttpInvoker) -> None:
    b = Branches(base="")
    runner, port = await _start(_app(b), keepalive_timeout=0.05)
    try:
        url = f"http://127.0.0.1:{port}/ok"
        for _ in range(3):
            assert (await invoker.call(_call(url))).outcome is Outcome.SUCCESS
            await aeventually(_no_open(invoker), timeout=5)  # the server closed it
        assert invoker.client.stats().connects == 3
        assert len(b.seen) == 3
    finally:
        await runner.cleanup()


def _no_open(invoker: HttpInvoker) -> Any:
    async def check() -> bool:
        return invoker.client.stats().open == 0
    return check


async def test_timeout_then_recovery(branches: Branches, invoker: HttpInvoker) -> None:
    res = await invoker.call(_call(branches.base + "/hold", timeout=0.2))
    assert res.outcome is Outcome.ERROR and res.detail == "timeout after 0.2s"
    assert invoker.client.stats().open == 0  # a timed-out connection is not reused
    assert (await invoker.call(_call(branches.base + "/ok"))).outcome is Outcome.SUCCESS


async def test_unreachable_port(invoker: HttpInvoker) -> None:
    res = await invoker.call(_call(f"http://127.0.0.1:{free_port()}/x"))
    assert res.outcome is Outcome.ERROR
    assert "ConnectionRefusedError" in res.detail or "OSError" in res.detail
    assert invoker.client.stats().open == 0


async def test_bad_header_is_an_error_result(branches: Branches, invoker: HttpInvoker) -> None:
    res = await invoker.call(_call(branches.base + "/ok", headers={"X-A": "v\r\nX-B: 1"}))
    assert res.outcome is Outcome.ERROR and "HeaderError" in res.detail
    assert branches.seen == []


async def test_large_payload(branches: Branches, invoker: HttpInvoker) -> None:
    payload = b"[" + b"1," * (3 * 1024 * 1024) + b"1]"
    res = await invoker.call(_call(branches.base + "/size", payload))
    assert res.outcome is Outcome.SUCCESS
    small = b'{"a":1}'
    assert (await invoker.call(_call(branches.base + "/size", small))).outcome is Outcome.SUCCESS
    assert invoker.client.stats().connects == 1


async def test_empty_url_is_success(invoker: HttpInvoker) -> None:
    assert (await invoker.call(_call(""))).outcome is Outcome.SUCCESS


async def test_user_info_url_goes_through_aiohttp(
    branches: Branches, invoker: HttpInvoker
) -> None:
    url = branches.base.replace("http://", "http://u:p@") + "/ok"
    assert (await invoker.call(_call(url))).outcome is Outcome.SUCCESS
    assert branches.seen[-1].headers["Authorization"].startswith("Basic ")
    assert branches.seen[-1].query["gid"] == "gid-1"
    assert invoker.client.stats().connects == 0


async def test_router_sends_http_to_http(branches: Branches) -> None:
    r = Router(HttpInvoker())
    try:
        assert (await r.call(_call(branches.base + "/ok"))).outcome is Outcome.SUCCESS
        assert (await r.call(_call("localhost:1/svc.X/Y"))).outcome is Outcome.ERROR
    finally:
        await r.close()


async def test_idle_bound_and_idle_timeout(branches: Branches) -> None:
    inv = HttpInvoker()
    inv.client.pool.max_idle_per_host = 2
    inv.client.pool.idle_timeout = 0.2
    try:
        calls = [asyncio.create_task(inv.call(_call(branches.base + "/hold"))) for _ in range(5)]
        await aeventually(_active(branches, 5), timeout=5)
        branches.release.set()
        results = await asyncio.gather(*calls)
        assert all(r.outcome is Outcome.SUCCESS for r in results)
        assert inv.client.stats().idle == 2
        await aeventually(_no_open(inv), timeout=5)  # closed by the idle sweeper
    finally:
        await inv.close()


def _active(b: Branches, n: int) -> Any:
    async def check() -> bool:
        return b.active == n
    return check


async def test_connection_limit(branches: Branches) -> None:
    inv = HttpInvoker(limit=2)
    try:
        calls = [asyncio.create_task(inv.call(_call(branches.base + "/hold"))) for _ in range(6)]
        await aeventually(_active(branches, 2), timeout=5)
        branches.release.set()
        results = await asyncio.gather(*calls)
        assert all(r.outcome is Outcome.SUCCESS for r in results)
        assert branches.max_active == 2
        assert inv.client.stats().connects == 2
    finally:
        await inv.close()


async def test_cancelled_call_closes_its_connection(
    branches: Branches, invoker: HttpInvoker
) -> None:
    task = asyncio.create_task(invoker.call(_call(branches.base + "/hold")))
    await aeventually(_active(branches, 1), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert invoker.client.stats().open == 0


async def test_limit_evicts_idle_connection_of_another_host(branches: Branches) -> None:
    other = Branches(base="")
    runner, port = await _start(_app(other))
    inv = HttpInvoker(limit=1)
    try:
        assert (await inv.call(_call(branches.base + "/ok"))).outcome is Outcome.SUCCESS
        res = await inv.call(_call(f"http://127.0.0.1:{port}/ok"))
        assert res.outcome is Outcome.SUCCESS
        assert inv.client.stats().open == 1 and inv.client.stats().connects == 2
    finally:
        await inv.close()
        await runner.cleanup()


@dataclass
class KeepAliveBranch:
    """A raw HTTP/1.1 keep-alive branch server that sees what a client does with its
    connections: `/bomb` answers the gzip bomb, anything else SUCCESS."""

    port: int = 0
    connections: int = 0
    closed_by_client: int = 0
    server: asyncio.Server | None = None

    async def serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await r.readexactly(length)
                if head.split(b" ", 2)[1].startswith(b"/bomb"):
                    body, extra = _big_bomb(), b"Content-Encoding: gzip\r\n"
                else:
                    body, extra = b'{"dtm_result":"SUCCESS"}', b""
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra)
                        + body)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client += 1  # EOF (or reset) from the client
        finally:
            w.close()


@pytest.fixture
async def keep_alive() -> AsyncIterator[KeepAliveBranch]:
    k = KeepAliveBranch()
    k.server = await asyncio.start_server(k.serve, "127.0.0.1", 0)
    k.port = k.server.sockets[0].getsockname()[1]
    yield k
    k.server.close()


@pytest.mark.parametrize("user_info", [False, True], ids=["own-client", "aiohttp"])
async def test_compression_bomb_is_an_error_and_drops_the_connection(
    keep_alive: KeepAliveBranch, invoker: HttpInvoker, user_info: bool
) -> None:
    """Seen from the branch server, on both client paths: the connection still sending the
    bomb is closed by the client (not kept for reuse), and the next call comes on a new
    one. (aiohttp keeps a connection whose answer it had received whole: see BranchClient.)"""
    auth = "u:p@" if user_info else ""
    base = f"http://{auth}127.0.0.1:{keep_alive.port}"
    res = await invoker.call(_call(base + "/bomb"))
    assert res.outcome is Outcome.ERROR
    assert res.detail == "ResponseTooLarge: branch response larger than 1048576 bytes"

    async def closed() -> bool:
        return keep_alive.closed_by_client == 1

    await aeventually(closed, timeout=5)
    # the client is still good for the next call, on a new connection
    assert (await invoker.call(_call(base + "/ok"))).outcome is Outcome.SUCCESS
    assert keep_alive.connections == 2 and keep_alive.closed_by_client == 1
    assert (await invoker.call(_call(base + "/ok"))).outcome is Outcome.SUCCESS
    assert keep_alive.connections == 2  # a good answer's connection is kept (the control)


async def test_cap_is_configurable(branches: Branches) -> None:
    inv = HttpInvoker(max_response=10)
    try:
        res = await inv.call(_call(branches.base + "/text/SUCCESS"))  # 25 bytes of JSON
        assert res.detail == "ResponseTooLarge: branch response larger than 10 bytes"
    finally:
        await inv.close()


@pytest.mark.parametrize("user_info", [False, True], ids=["own-client", "aiohttp"])
async def test_redirects_are_never_followed(
    branches: Branches, invoker: HttpInvoker, user_info: bool
) -> None:
    other = Branches(base="")
    runner, port = await _start(_app(other))
    try:
        base = branches.base.replace("http://", "http://u:p@") if user_info else branches.base
        to = f"http://127.0.0.1:{port}/ok"
        res = await invoker.call(_call(f"{base}/redirect?to={to}"))
        assert res.outcome is Outcome.ERROR and res.detail.startswith("302 ")
        assert [s.path for s in branches.seen] == ["/redirect"]
        assert other.seen == []  # neither the call nor its credentials went elsewhere
    finally:
        await runner.cleanup()
