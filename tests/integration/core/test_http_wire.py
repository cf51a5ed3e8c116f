"""dtmx's own HTTP/1.1 server (dtmx.net.api_server), spoken to over raw sockets.

Clients we did not write (requests, aiohttp, curl-like Expect headers, HTTP/1.0 tools) must
all get well-formed answers: pipelined requests in order, chunked bodies, 100-continue,
clear 4xx for what cannot be served.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
import pytest

from dtmx.net.api_server import (
    HttpServer,
    Request,
    Response,
    Routes,
    ServerLimits,
    json_response,
)
from tests.support.server import ServerProcess
from tests.support.util import aeventually, free_port


async def _echo(r: Request) -> Response:
    return json_response({"method": r.method, "path": r.path, "query": r.query,
                          "body": r.body.decode(), "match": r.match_info})


# set when a /slow handler starts (the stop test waits for it)
SLOW_STARTED: list[asyncio.Event] = []
# /big handler calls (the flow-control test counts them)
BIG_CALLS: list[int] = [0]


async def _slow(r: Request) -> Response:
    for e in SLOW_STARTED:
        e.set()
    await asyncio.sleep(float(r.query.get("s", "0.05")))
    return json_response({"slow": r.query.get("n", "")})


async def _boom(r: Request) -> Response:
    raise RuntimeError("handler bug")


BIG = b"x" * 65536


async def _big(r: Request) -> Response:
    BIG_CALLS[0] += 1
    return Response(BIG, content_type="application/octet-stream")


@pytest.fixture
async def wire() -> AsyncIterator[tuple[HttpServer, int]]:
    routes = Routes()
    routes.add("POST", "/echo", _echo)
    routes.add("GET", "/echo", _echo)
    routes.add("GET", "/slow", _slow)
    routes.add("GET", "/boom", _boom)
    routes.add("GET", "/big", _big)
    routes.add("DELETE", "/topic/{name}", _echo)
    server = HttpServer(
        routes,
        error_response=lambda r, e: json_response({"message": f"mapped {type(e).__name__}"}, 500),
        limits=ServerLimits(max_body=1000, max_header=4096, max_buffered=256 * 1024,
                            idle_timeout=1.0),
    )
    port = free_port()
    await server.start("127.0.0.1", port)
    yield server, port
    await server.stop()


async def _exchange(port: int, raw: bytes, *, until_close: bool = True,
                    responses: int = 0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        if until_close:
            return await asyncio.wait_for(reader.read(), 5)
        got = b""
        while got.count(b"HTTP/1.1 ") < responses:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            got += chunk
        return got
    finally:
        writer.close()


@asynccontextmanager
async def _sent(port: int, raw: bytes
                ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection on which `raw` was sent; closed at the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        yield reader, writer
    finally:
        writer.close()


def _bodies(raw: bytes) -> list[tuple[int, dict[str, object]]]:
    """Split a byte stream of responses (all with Content-Length) into (status, json)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (h.partition(b": ") for h in lines[1:])
                      if k.lower() == b"content-length")
        out.append((status, orjson.loads(rest[:length])))
        raw = rest[length:]
    return out


async def test_pipelined_requests_are_answered_in_order(wire: tuple[HttpServer, int]) -> None:
    _, port = wire
    # the first one is slow: the later ones must still come back after it
    raw = (b"GET /slow?n=1&s=0.1 HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /slow?n=2&s=0 HTTP/1.1\r\nHost: x\r\n\r\n"
           b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    got = _bodies(await _exchange(port, raw, until_close=False, responses=3))
    assert [b for _, b in got] == [{"slow": "1"}, {"slow": "2"},
                                   {"method": "POST", "path": "/echo", "query": {},
                                    "body": "hi", "match": {}}]


async def test_chunked_body_query_and_path_parameter(wire: tuple[HttpServer, int]) -> None:
    _, port = wire
    raw = (b"POST /echo?a=1&a=2&b=%20x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    [(status, body)] = _bodies(await _exchange(port, raw))
    assert status == 200
    assert body == {"method": "POST", "path": "/echo", "query": {"a": "1", "b": " x"},
                    "body": "abcde", "match": {}}
    raw = b"GET /echo?t=%E4%B8%BB%E9%A2%98 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    [(status, body)] = _bodies(await _exchange(port, raw))
    assert status == 200 and body["query"] == {"t": "主题"}
    # not percent-encoded: not a valid request target (RFC 9112), refused with a message
    raw = "GET /echo?t=主题 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    [(status, body)] = _bodies(await _exchange(port, raw))
    assert status == 400 and "malformed" in str(body["message"])
    raw = b"DELETE /topic/my%20topic HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    [(status, body)] = _bodies(await _exchange(port, raw))
    assert status == 200 and body["match"] == {"name": "my topic"}


async def test_expect_100_continue(wire: tuple[HttpServer, int]) -> None:
    _, port = wire
    async with _sent(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                           b"Expect: 100-continue\r\n\r\n") as (reader, writer):
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"body")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_http_1_0_gets_its_answer_and_the_connection_closes(
    wire: tuple[HttpServer, int]
) -> None:
    _, port = wire
    raw = await _exchange(port, b"GET /echo?x=1 HTTP/1.0\r\n\r\n")
    assert b"Connection: close" in raw
    [(status, body)] = _bodies(raw)
    assert status == 200 and body["query"] == {"x": "1"}


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404, "not found"),
        (b"PUT /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "not allowed"),
        (b"PUT /topic/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "not allowed"),
        (b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 500, "mapped Runtime"),
        (b"GARBAGE\r\n\r\n", 400, "malformed HTTP request"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413, "larger than"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         + b"7d0\r\n" + b"x" * 2000 + b"\r\n0\r\n\r\n", 413, "larger than"),
    ],
)
async def test_what_cannot_be_served_gets_a_clear_4xx(
    wire: tuple[HttpServer, int], raw: bytes, status: int, message: str
) -> None:
    _, port = wire
    [(got, body)] = _bodies(await _exchange(port, raw))
    assert got == status
    assert message in str(body["message"])


async def test_idle_connections_are_closed(wire: tuple[HttpServer, int]) -> None:
    server, port = wire
    async with _sent(port, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n") as (reader, _):
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        # idle_timeout is 1 s: the server hangs up by itself
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest.endswith(b"}")
        await aeventually(lambda: _none_open(server), timeout=5)


async def test_stop_lets_a_running_handler_finish(wire: tuple[HttpServer, int]) -> None:
    server, port = wire
    started = asyncio.Event()
    SLOW_STARTED[:] = [started]
    async with _sent(port, b"GET /slow?n=last&s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n"
                     ) as (reader, writer):
        await asyncio.wait_for(started.wait(), 5)
        SLOW_STARTED.clear()
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0.05)
        # a request arriving while the server stops is not taken
        writer.write(b"GET /slow?n=late&s=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        await stopping
        raw = await asyncio.wait_for(reader.read(), 5)
        assert b"Connection: close" in raw
        assert _bodies(raw) == [(200, {"slow": "last"})]


def test_real_server_pipelining_chunked_and_bad_requests(server: ServerProcess) -> None:
    """The same against `dtmx serve` on every store: two pipelined newGid, a chunked
    submit with malformed JSON (400 with a message, nothing stored), an unknown route."""
    host, port = server.url.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /api/dtmsvr/newGid HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /api/dtmsvr/newGid HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /api/dtmsvr/submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"\r\n5\r\n{\"gid\r\n0\r\n\r\n"
                  b"GET /api/dtmsvr/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    got = _bodies(raw)
    assert [st for st, _ in got] == [200, 200, 400, 404]
    gids = [b["gid"] for _, b in got[:2]]
    assert len(set(gids)) == 2 and all(gids)
    assert "malformed JSON" in str(got[2][1]["message"])


async def test_a_request_dripping_in_too_slowly_is_cut_off(wire: tuple[HttpServer, int]) -> None:
    server, port = wire
    # the headers never end
    async with _sent(port, b"GET /echo HTTP/1.1\r\nHost: x\r\n") as (reader, _):
        # idle_timeout is 1 s: the half-sent request does not hold the connection
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await aeventually(lambda: _none_open(server), timeout=5)


async def test_a_client_that_does_not_read_is_not_fed(wire: tuple[HttpServer, int]) -> None:
    """300 pipelined requests for 64 KiB answers (19 MiB), nothing read: the server stops
    handling once 256 KiB of answers wait (plus what the kernel's socket buffers hold),
    instead of buffering them all; when the client reads, every answer arrives, in order."""
    _, port = wire
    n = 300
    BIG_CALLS[0] = 0
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, sock=None, limit=65536 * 2)
    try:
        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * n)
        handled = await _settled(lambda: BIG_CALLS[0])
        # kernel buffers on loopback hold a few MiB; the bound is what our side adds
        assert 0 < handled < n // 2
        got = 0
        while got < n:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 65536" in head
            assert await asyncio.wait_for(reader.readexactly(65536), 5) == BIG
            got += 1
        assert BIG_CALLS[0] == n
    finally:
        writer.close()


async def _settled(read: Callable[[], int], *, polls: int = 4, every: float = 0.05,
                   timeout: float = 10.0) -> int:
    """The value of `read()` once it stopped changing for `polls` polls in a row."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, same = read(), 0
    while same < polls:
        assert loop.time() < deadline, f"still changing after {timeout}s: {last}"
        await asyncio.sleep(every)
        now = read()
        same = same + 1 if now == last else 0
        last = now
    return last


async def test_a_header_over_the_limit_is_431(wire: tuple[HttpServer, int]) -> None:
    _, port = wire
    raw = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16384 + b"\r\n\r\n"
    [(status, body)] = _bodies(await _exchange(port, raw))
    assert status == 431 and body == {"message": "request header larger than 4096 bytes"}


async def test_an_error_answer_comes_after_earlier_pipelined_answers(
    wire: tuple[HttpServer, int]
) -> None:
    """A pipelined request refused (413 here) is answered in its turn, never ahead of the
    answers owed to the requests before it, and with no 100 Continue before it."""
    _, port = wire
    raw = (b"GET /slow?n=1&s=0.1 HTTP/1.1\r\nHost: x\r\n\r\n"
           b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
           b"Expect: 100-continue\r\n\r\n")
    got = await _exchange(port, raw)
    assert b"100 Continue" not in got
    assert _bodies(got) == [(200, {"slow": "1"}),
                            (413, {"message": "request body larger than 1000 bytes"})]


async def test_100_continue_waits_for_earlier_pipelined_answers(
    wire: tuple[HttpServer, int]
) -> None:
    _, port = wire
    async with _sent(port, b"GET /slow?n=1&s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
                           b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                           b"Expect: 100-continue\r\n\r\n") as (reader, writer):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert orjson.loads(await reader.readexactly(length)) == {"slow": "1"}
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hi")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_many_pipelined_requests_in_one_write_are_all_answered(
    wire: tuple[HttpServer, int]
) -> None:
    """2,000 tiny requests in one write: parsing stops at the pipelining limit and resumes
    as answers go out; every request is answered once, in order."""
    _, port = wire
    n = 2000
    raw = b"".join(b"GET /echo?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n))
    got = _bodies(await _exchange(port, raw + b"GET /echo?i=last HTTP/1.1\r\nHost: x\r\n"
                                  b"Connection: close\r\n\r\n"))
    assert [b["query"] for _, b in got] == [{"i": str(i)} for i in range(n)] + [{"i": "last"}]


async def _none_open(server: HttpServer) -> bool:
    return not server.connections
