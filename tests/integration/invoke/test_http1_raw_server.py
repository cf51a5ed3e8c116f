"""The HTTP/1.1 client against raw asyncio servers that misbehave on purpose:
stale keep-alive connections, answers cut short, bodies that end with the connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall
from dtmx.invoke.http_invoker import HttpInvoker
from tests.support.util import free_port

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# (connection number, request number on it) -> what to do
Script = Callable[[int, int, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class Raw:
    port: int
    connections: int = 0
    requests: int = 0


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Script], Awaitable[Raw]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> Raw:
        raw = Raw(port=free_port())

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            raw.connections += 1
            conn = raw.connections
            n = 0
            try:
                while await _read_request(reader) is not None:
                    n += 1
                    raw.requests += 1
                    if not await script(conn, n, writer):
                        break
            finally:
                writer.close()

        servers.append(await asyncio.start_server(handle, "127.0.0.1", raw.port))
        return raw

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


@pytest.fixture
async def invoker() -> AsyncIterator[HttpInvoker]:
    inv = HttpInvoker()
    yield inv
    await inv.close()


def _call(port: int) -> BranchCall:
    return BranchCall(url=f"http://127.0.0.1:{port}/b", gid="g", trans_type="saga",
                      branch_id="01", op="action", payload=b"{}")


async def test_stale_reused_connection_is_retried_once(
    raw_server: Callable[[Script], Awaitable[Raw]], invoker: HttpInvoker
) -> None:
    async def script(conn: int, n: int, w: asyncio.StreamWriter) -> bool:
        if n == 1:
            w.write(OK)
            return True
        return False  # the 2nd request on a connection: close without a byte, like a
        # server whose keep-alive timer fired just as the request arrived

    raw = await raw_server(script)
    assert (await invoker.call(_call(raw.port))).outcome is Outcome.SUCCESS
    res = await invoker.call(_call(raw.port))
    assert res.outcome is Outcome.SUCCESS, res.detail
    assert (raw.connections, raw.requests) == (2, 3)


async def test_fresh_connection_closed_without_answer_is_not_retried(
    raw_server: Callable[[Script], Awaitable[Raw]], invoker: HttpInvoker
) -> None:
    async def script(conn: int, n: int, w: asyncio.StreamWriter) -> bool:
        return False

    raw = await raw_server(script)
    res = await invoker.call(_call(raw.port))
    assert res.outcome is Outcome.ERROR and "closed" in res.detail
    assert raw.requests == 1


async def test_answer_cut_short_is_an_error_without_retry(
    raw_server: Callable[[Script], Awaitable[Raw]], invoker: HttpInvoker
) -> None:
    async def script(conn: int, n: int, w: asyncio.StreamWriter) -> bool:
        if n == 1:
            w.write(OK)
            return True
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await w.drain()
        return False

    raw = await raw_server(script)
    assert (await invoker.call(_call(raw.port))).outcome is Outcome.SUCCESS
    res = await invoker.call(_call(raw.port))
    assert res.outcome is Outcome.ERROR
    assert raw.requests == 2


async def test_body_until_close(
    raw_server: Callable[[Script], Awaitable[Raw]], invoker: HttpInvoker
) -> None:
    async def script(conn: int, n: int, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.0 200 OK\r\n\r\n{\"dtm_result\":")
        await w.drain()
        w.write(b"\"ONGOING\"}")
        return False

    raw = await raw_server(script)
    for _ in range(2):
        assert (await invoker.call(_call(raw.port))).outcome is Outcome.ONGOING
    assert raw.connections == 2


async def test_garbage_answer(
    raw_server: Callable[[Script], Awaitable[Raw]], invoker: HttpInvoker
) -> None:
    async def script(conn: int, n: int, w: asyncio.StreamWriter) -> bool:
        w.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        return True

    raw = await raw_server(script)
    res = await invoker.call(_call(raw.port))
    assert res.outcome is Outcome.ERROR and "HttpProtocolError" in res.detail
    assert invoker.client.stats().open == 0
