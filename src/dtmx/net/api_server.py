"""A small HTTP/1.1 server for the dtmx API: asyncio protocol + httptools parser.

Why not aiohttp's server: the API is a score of JSON routes, and aiohttp's request and
response machinery cost about 50 µs of CPU per request here, against about 12 µs for this
(measured side by side, same client). Every saga submit, prepare and registerBranch pays
it, so it shows in the benchmarks. aiohttp stays for the SDK and the example services.

What it does: keep-alive and pipelining (responses in request order, one handler at a time
per connection), chunked request bodies, `Expect: 100-continue`, HTTP/1.0 clients, a body
size limit (413), 400 on malformed requests, 404/405, an idle timeout, and a graceful close
that lets running handlers finish. What it does not: TLS (terminate it in front, as for
DTM), upgrades, streaming bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

import httptools
import orjson

log = logging.getLogger("dtmx.http")

DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT = 75.0
#: Requests parsed ahead of the one being handled before the socket stops being read.
MAX_PIPELINED = 16


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]  # first value of each parameter, like aiohttp's MultiDict.get
    headers: dict[str, str]  # lower-case names
    body: bytes
    match_info: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Response:
    body: bytes
    status: int = 200
    content_type: str = "application/json"


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status)


Handler = Callable[[Request], Awaitable[Response]]


class Routes:
    """Exact paths, plus prefix routes whose rest of the path is one parameter."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._prefix: list[tuple[str, str, str, Handler]] = []  # prefix, param, method, fn

    def add(self, method: str, path: str, handler: Handler) -> None:
        """`path` may end in one `{name}` segment: `/api/dtmsvr/topic/{name}`."""
        if path.endswith("}") and "{" in path:
            prefix, _, param = path.rpartition("{")
            self._prefix.append((prefix, param[:-1], method, handler))
        else:
            self._exact.setdefault(path, {})[method] = handler

    def resolve(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], int]:
        """(handler, path parameters, status): status is 404/405 when handler is None."""
        by_method = self._exact.get(path)
        if by_method is not None:
            fn = by_method.get(method)
            return (fn, {}, 200) if fn else (None, {}, 405)
        found = False
        for prefix, param, m, fn in self._prefix:
            rest = path[len(prefix):]
            if path.startswith(prefix) and rest and "/" not in rest:
                found = True
                if m == method:
                    return fn, {param: rest}, 200
        return None, {}, 405 if found else 404


class _Clock:
    """The Date header, formatted once per second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


def _status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {status} {reason}\r\n".encode()


_STATUS_LINES = {s.value: _status_line(s.value) for s in HTTPStatus}


class _Parsed:
    """Fields of the request being parsed (httptools calls back per piece)."""

    __slots__ = ("body", "headers", "size", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._cur = _Parsed()
        self._queue: deque[tuple[Request | None, bool, int]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._reading = True
        self._write_paused = False
        self._draining = False
        self._idle: asyncio.TimerHandle | None = None
        # set by the parser callbacks (an exception raised there would come back from
        # httptools as a generic parser error)
        self._too_large = False

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods
        self._transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._closing = True
        if self._idle is not None:
            self._idle.cancel()
        # a handler already running finishes (its store writes must not be cut short);
        # its response goes nowhere
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as e:
            self._reject(400, f"malformed HTTP request: {e}")
        if self._too_large:
            self._reject(413, f"request body larger than {self._server.max_body} bytes")

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        self._cur = _Parsed()
        # a request must arrive whole within the idle timeout (no slow-drip clients)
        self._arm_idle()

    def on_url(self, url: bytes) -> None:
        self._cur.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._cur.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self._cur.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._server.max_body:
            self._too_large = True
        if self._cur.headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._cur.size += len(body)
        if self._cur.size > self._server.max_body:
            self._too_large = True
        if not self._too_large:
            self._cur.body.append(body)

    def on_message_complete(self) -> None:
        if self._too_large or self._draining:
            return  # (draining: the server is stopping; this connection closes after the
            # answer being worked on)
        if self._idle is not None:  # the handler may take as long as it needs
            self._idle.cancel()
            self._idle = None
        cur = self._cur
        keep_alive = self._parser.should_keep_alive()
        method = self._parser.get_method().decode("ascii", "replace")
        try:
            url = httptools.parse_url(cur.url)
        except httptools.HttpParserInvalidURLError:
            self._queue.append((None, False, 400))
        else:
            # raw UTF-8 (some clients do not percent-encode) decodes as such
            path = unquote(url.path.decode("utf-8", "replace"))
            query = dict(reversed(parse_qsl(url.query.decode("utf-8", "replace"),
                                            keep_blank_values=True))) if url.query else {}
            request = Request(method, path, query, cur.headers, b"".join(cur.body))
            self._queue.append((request, keep_alive, 0))
        if len(self._queue) >= MAX_PIPELINED:
            self._pause_reading()
        if self._task is None:
            self._task = self._loop.create_task(self._drain())

    # ---- flow control: stop reading requests while answers pile up
    def pause_writing(self) -> None:
        """The client does not read its answers: take no more requests from it."""
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._maybe_resume_reading()

    def _pause_reading(self) -> None:
        if self._reading and self._transport is not None and not self._closing:
            self._transport.pause_reading()
            self._reading = False

    def _maybe_resume_reading(self) -> None:
        if (not self._reading and not self._write_paused and not self._closing
                and len(self._queue) < MAX_PIPELINED // 2 and self._transport is not None):
            self._transport.resume_reading()
            self._reading = True

    # ---- handling
    async def _drain(self) -> None:
        try:
            while self._queue and not self._closing:
                request, keep_alive, status = self._queue.popleft()
                self._maybe_resume_reading()
                if request is None:
                    self._write(json_response({"message": "malformed URL"}, status), False)
                    return
                response = await self._server.dispatch(request)
                self._write(response, keep_alive)
                if not keep_alive:
                    return
        finally:
            self._task = None
            if not self._closing and not self._queue:
                self._arm_idle()

    def _write(self, response: Response, keep_alive: bool) -> None:
        if self._closing or self._transport is None:
            return
        keep_alive = keep_alive and not self._draining
        head = _STATUS_LINES.get(response.status) or _status_line(response.status)
        body = response.body
        self._transport.write(
            b"%sContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\nServer: dtmx\r\n%s\r\n%s"
            % (head, response.content_type.encode(), len(body), self._server.clock.date(),
               b"" if keep_alive else b"Connection: close\r\n", body)
        )
        if not keep_alive:
            self._close()

    def _reject(self, status: int, message: str) -> None:
        """A request we cannot parse: answer it and drop the connection (the byte stream
        cannot be trusted to find the next request)."""
        self._queue.clear()
        self._write(json_response({"message": message}, status), False)
        self._close()

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(self._server.idle_timeout, self._close)

    def close_when_idle(self) -> bool:
        """For shutdown: close now if no handler runs; True if closed."""
        if self._task is None:
            self._close()
            return True
        # finish the running request, answer it with Connection: close, take no more
        self._draining = True
        self._queue.clear()
        return False

    @property
    def busy(self) -> bool:
        return self._task is not None

    @property
    def reading(self) -> bool:
        """False while requests are not read (too many queued, or answers not taken)."""
        return self._reading


class HttpServer:
    """Serve `routes` on host:port; `error_response` turns a handler's exception into a
    response (the API maps its error base once, there)."""

    def __init__(
        self,
        routes: Routes,
        *,
        error_response: Callable[[Request, Exception], Response],
        max_body: int = DEFAULT_MAX_BODY,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.routes = routes
        self.error_response = error_response
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.clock = _Clock()
        self.connections: set[HttpProtocol] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(self), host or None, port,
            reuse_port=reuse_port or None, reuse_address=True,
        )

    async def dispatch(self, request: Request) -> Response:
        handler, params, status = self.routes.resolve(request.method, request.path)
        if handler is None:
            reason = "not found" if status == 404 else "method not allowed"
            return json_response({"message": f"{request.method} {request.path}: {reason}"},
                                 status)
        request.match_info = params
        try:
            return await handler(request)
        except Exception as e:
            return self.error_response(request, e)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let running handlers finish (up to `timeout`), close the rest."""
        if self._server is None:
            return
        self._server.close()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            busy = [c for c in list(self.connections) if not c.close_when_idle()]
            if not busy or asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.01)
        for c in list(self.connections):
            c._close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
