"""Property tests of the API server's request side: any bytes, split anywhere.

The connection protocol is driven directly with a recording transport (the bytes a socket
would carry): whatever a client sends, nothing raises out of `data_received` or the
handlers' task, every answer is a well-formed response with one of the documented statuses,
the answers do not depend on how the bytes were split, and what the server holds stays
within its limits.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dtmx.net.api_server import (
    HttpProtocol,
    HttpServer,
    Request,
    Response,
    Routes,
    ServerLimits,
    json_response,
)

LIMITS = ServerLimits(max_body=512, max_header=1024, max_pipelined=4, max_buffered=64 * 1024,
                      idle_timeout=30.0)
STATUSES = {b"200", b"400", b"404", b"405", b"413", b"431"}
_DATE = re.compile(rb"\r\nDate: [^\r]*")


class _Transport:
    """What a socket transport does for HttpProtocol, recorded."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed


async def _echo(r: Request) -> Response:
    return json_response({"m": r.method, "p": r.path, "q": r.query, "n": len(r.body)})


def _server() -> HttpServer:
    routes = Routes()
    routes.add("POST", "/echo", _echo)
    routes.add("GET", "/echo", _echo)
    return HttpServer(routes, error_response=lambda r, e: json_response({}, 500),
                      limits=LIMITS)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


async def _serve(pieces: list[bytes]) -> bytes:
    loop = asyncio.get_running_loop()
    errors: list[Any] = []
    loop.set_exception_handler(lambda _, ctx: errors.append(ctx))
    server = _server()
    transport = _Transport()
    protocol = HttpProtocol(server)
    protocol.connection_made(transport)  # type: ignore[arg-type]
    for piece in pieces:
        if transport.closed:
            break
        if not transport.reading:  # a paused socket delivers nothing until resumed
            for _ in range(50):
                await asyncio.sleep(0)
                if transport.reading or transport.closed:
                    break
            else:
                raise AssertionError("reading stayed paused with nothing to answer")
        protocol.data_received(piece)
        await asyncio.sleep(0)
    for _ in range(200):  # let the handlers answer what was complete
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    await asyncio.sleep(0)
    assert errors == []
    return bytes(transport.out)


def _answers(out: bytes) -> list[bytes]:
    """Each answer with its Date header removed; asserts the framing is well-formed."""
    answers = []
    while out:
        if out.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
            answers.append(b"100")
            out = out[25:]
            continue
        head, sep, rest = out.partition(b"\r\n\r\n")
        assert sep, out[:200]
        status = head[9:12]
        assert head.startswith(b"HTTP/1.1 ") and status in STATUSES, head
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        assert len(rest) >= length
        answers.append(_DATE.sub(b"", head) + b"\n" + rest[:length])
        out = rest[length:]
    return answers


_cuts = st.lists(st.integers(min_value=0, max_value=100_000), max_size=10)

_request = st.builds(
    lambda method, path, body, chunked, expect: (
        method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n"
        + (b"Expect: 100-continue\r\n" if expect else b"")
        + (b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
           if chunked and body else b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    ),
    st.sampled_from([b"GET", b"POST", b"PUT"]),
    st.sampled_from([b"/echo", b"/echo?a=1&b=%20", b"/nowhere", b"/echo/x"]),
    st.binary(max_size=700),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_request, min_size=1, max_size=12), _cuts, _cuts)
def test_pipelined_requests_answered_the_same_however_split(
    requests: list[bytes], cuts: list[int], other_cuts: list[int]
) -> None:
    data = b"".join(requests)
    one = _answers(asyncio.run(_serve(_split(data, cuts))))
    other = _answers(asyncio.run(_serve(_split(data, other_cuts))))
    # 100 Continue goes out when the head is in and nothing is owed before it, which
    # depends on where the bytes were cut; the real answers must not
    assert [a for a in one if a != b"100"] == [a for a in other if a != b"100"]
    assert len([a for a in one if a != b"100"]) <= len(requests)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), _cuts)
def test_any_bytes_get_well_formed_answers_or_none(data: bytes, cuts: list[int]) -> None:
    _answers(asyncio.run(_serve(_split(data, cuts))))


@settings(max_examples=50, deadline=None)
@given(_cuts)
def test_a_head_that_never_ends_is_refused_with_431(cuts: list[int]) -> None:
    data = b"GET /echo HTTP/1.1\r\nX: " + b"a" * 100_000
    out = _answers(asyncio.run(_serve(_split(data, [c * 13 for c in cuts]))))
    assert len(out) == 1 and out[0].startswith(b"HTTP/1.1 431 ")
    assert b"request header larger than 1024 bytes" in out[0]
