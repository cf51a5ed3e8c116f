"""A small HTTP/1.1 server for the dtmx API: asyncio protocol + httptools parser.

Why not aiohttp's server, uvicorn or granian: the API is a score of JSON routes, and the
per-request machinery of each costs more CPU per saga than this (bench/REPORT.md has the
side-by-side numbers). aiohttp stays for the SDK and the example services.

What it does: keep-alive and pipelining (responses in request order, one handler at a time
per connection), chunked request bodies, `Expect: 100-continue`, HTTP/1.0 clients, 400 on
malformed requests, 404/405, an idle timeout, and a graceful close that lets running
handlers finish. What it does not: TLS (terminate it in front, as for DTM), upgrades,
streaming bodies.

What one client can make it hold (`ServerLimits`): a request head up to `max_header` bytes
(431 beyond), a body up to `max_body` (413), `max_pipelined` parsed requests waiting behind
the one being handled (then parsing stops and the socket is not read), and answers waiting
for a client that does not read up to `max_buffered` bytes plus one answer (then no further
request is handled until the client reads). An error answer (400, 413, 431) comes after the
answers to the requests before it, and closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections import deque
from collections.abc import Callable
from typing import cast
from urllib.parse import parse_qsl, unquote

import httptools

from dtmx.net.api_routes import (
    DateClock,
    Handler,
    IdleTimer,
    Request,
    Response,
    Routes,
    ServerLimits,
    encode,
    json_response,
)

__all__ = [
    "Handler", "HttpServer", "Request", "Response", "Routes", "ServerLimits", "json_response",
]

log = logging.getLogger("dtmx.http")

# bytes handed to the parser at a time: bounds the requests one read can queue, and how
# far past `max_header` a head can grow before it is refused
_SLICE = 4096


class _Parsed:
    """Fields of the request being parsed (httptools calls back per piece)."""

    __slots__ = ("body", "headers", "size", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request we refuse."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# a queued item: a request with its keep-alive flag, or an error answer that ends the
# connection
_Item = tuple[Request, bool] | Response


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._limits = server.limits
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._cur = _Parsed()
        self._queue: deque[_Item] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._refused = False  # an error answer is queued: parse nothing more
        self._reading = True
        self._held = b""  # received bytes not parsed yet (too many requests queued)
        self._in_head = False
        self._head_bytes = 0
        self._continue_owed = False  # a 100 Continue waits for earlier answers to go out
        self._writable: asyncio.Future[None] | None = None
        self._draining = False
        self._idle = IdleTimer(self._loop, server.limits.idle_timeout, self.close)

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods
        """A client connected: bound its write buffer and start its idle timer."""
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=self._limits.max_buffered)
        self._server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed: forget it and stop its timers."""
        self._server.connections.discard(self)
        self._closing = True
        self._idle.cancel()
        self._wake_writer()
        # a handler already running finishes (its store writes must not be cut short);
        # its response goes nowhere
        self._queue.clear()
        self._held = b""

    def data_received(self, data: bytes) -> None:
        """Feed bytes to the parser, or hold them while answers are pending (pipelining)."""
        if self._closing or self._refused:
            return
        if self._held:  # parsing is stopped; reading is paused, so this stays one read
            self._held += data
            return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Feed `data` to the parser a slice at a time, stopping while the queue is full."""
        view = memoryview(data)
        pos, end = 0, len(data)
        limits = self._limits
        while pos < end and not self._refused:
            if len(self._queue) >= limits.max_pipelined:
                self._held = bytes(view[pos:])
                self._pause_reading()
                return
            piece = view[pos : pos + _SLICE]
            pos += len(piece)
            try:
                self._parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                self._refuse(400, "protocol upgrades are not supported")
            except httptools.HttpParserError as e:
                cause = e.__cause__ or e.__context__
                if isinstance(cause, _Refused):
                    self._refuse(cause.status, str(cause))
                else:
                    self._refuse(400, f"malformed HTTP request: {e}")
            if self._in_head:
                self._head_bytes += len(piece)
                if self._head_bytes > limits.max_header:
                    self._refuse(431, f"request header larger than {limits.max_header} bytes")

    # ---- httptools callbacks (an exception raised here reaches feed_data's caller as a
    # parser error with the exception as its context)
    def on_message_begin(self) -> None:
        """Parser callback: a request starts; it must arrive whole within the idle timeout."""
        self._cur = _Parsed()
        self._in_head = True
        self._head_bytes = 0
        # a request must arrive whole within the idle timeout (no slow-drip clients)
        self._arm_idle()

    def on_url(self, url: bytes) -> None:
        """Parser callback: a piece of the request target."""
        self._cur.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """Parser callback: one header (names lower-cased; the head size is bounded elsewhere)."""
        self._cur.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        """Parser callback: the head is complete; refuse a body larger than the limit before
        reading it.
        """
        self._in_head = False
        headers = self._cur.headers
        length = headers.get("content-length")
        max_body = self._limits.max_body
        if length is not None and length.isdigit() and int(length) > max_body:
            raise _Refused(413, f"request body larger than {max_body} bytes")
        if headers.get("expect", "").lower() == "100-continue":
            if self._queue or self._task is not None:
                self._continue_owed = True  # after the answers to the requests before it
            else:
                self._send_continue()

    def on_body(self, body: bytes) -> None:
        """Parser callback: a piece of the body, refused with 413 past the limit."""
        cur = self._cur
        cur.size += len(body)
        if cur.size > self._limits.max_body:
            raise _Refused(413, f"request body larger than {self._limits.max_body} bytes")
        cur.body.append(body)

    def on_message_complete(self) -> None:
        """Parser callback: the request is complete; queue it to be answered in order."""
        self._continue_owed = False
        if self._draining:
            return  # the server is stopping; this connection closes after the answer
            # being worked on
        self._idle.disarm()  # the handler may take as long as it needs
        cur = self._cur
        try:
            url = httptools.parse_url(cur.url)
        except httptools.HttpParserInvalidURLError:
            raise _Refused(400, "malformed URL") from None
        # raw UTF-8 (some clients do not percent-encode) decodes as such
        path = unquote(url.path.decode("utf-8", "replace"))
        query = dict(reversed(parse_qsl(url.query.decode("utf-8", "replace"),
                                        keep_blank_values=True))) if url.query else {}
        method = self._parser.get_method().decode("ascii", "replace")
        request = Request(method, path, query, cur.headers, b"".join(cur.body))
        self._enqueue((request, self._parser.should_keep_alive()))

    # ---- queue and flow control
    def _enqueue(self, item: _Item) -> None:
        self._queue.append(item)
        if self._task is None:
            self._task = self._loop.create_task(self._drain())

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` after the answers already owed, then close: the byte stream
        cannot be trusted to find the next request."""
        if self._refused:
            return
        self._refused = True
        self._continue_owed = False
        self._held = b""
        self._pause_reading()
        self._enqueue(json_response({"message": message}, status))

    def pause_writing(self) -> None:
        """The client does not read its answers: take no more requests from it."""
        if self._writable is None:
            self._writable = self._loop.create_future()
        self._pause_reading()

    def resume_writing(self) -> None:
        """The transport drained below its low mark: write again (and read, if paused for it)."""
        self._wake_writer()
        self._maybe_resume_reading()

    def _wake_writer(self) -> None:
        if self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)
            self._writable = None

    def _pause_reading(self) -> None:
        if self._reading and self._transport is not None and not self._closing:
            self._transport.pause_reading()
            self._reading = False

    def _maybe_resume_reading(self) -> None:
        if self._held and len(self._queue) < self._limits.max_pipelined:
            held, self._held = self._held, b""
            self._parse(held)
        if (not self._reading and self._writable is None and not self._closing
                and not self._held and not self._refused
                and len(self._queue) < self._limits.max_pipelined
                and self._transport is not None):
            self._transport.resume_reading()
            self._reading = True

    # ---- handling
    async def _drain(self) -> None:
        try:
            while self._queue and not self._closing:
                if self._writable is not None:
                    # answers are piling up unread: handle nothing more until they go out
                    # (or the idle timeout closes the connection)
                    self._arm_idle()
                    await self._writable
                    if self._closing:
                        return
                item = self._queue.popleft()
                self._maybe_resume_reading()
                if isinstance(item, Response):
                    self._write(item, False)
                    return
                request, keep_alive = item
                response = await self._server.dispatch(request)
                self._write(response, keep_alive)
                if not keep_alive:
                    return
        finally:
            self._task = None
            if not self._closing and not self._queue:
                if self._continue_owed:
                    self._continue_owed = False
                    self._send_continue()
                self._arm_idle()

    def _send_continue(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _write(self, response: Response, keep_alive: bool) -> None:
        if self._closing or self._transport is None:
            return
        keep_alive = keep_alive and not self._draining
        self._transport.write(encode(response, keep_alive, self._server.clock.date()))
        if not keep_alive:
            self.close()

    def close(self) -> None:
        """Close the connection now (answers not yet written are dropped)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def _arm_idle(self) -> None:
        self._idle.arm()

    def close_when_idle(self) -> bool:
        """For shutdown: close now if no handler runs; True if closed."""
        if self._task is None:
            self.close()
            return True
        # finish the running request, answer it with Connection: close, take no more
        self._draining = True
        self._queue.clear()
        return False


class HttpServer:
    """Serve `routes` on host:port; `error_response` turns a handler's exception into a
    response (the API maps its error base once, there); `limits` bounds what one
    connection may make the server hold."""

    def __init__(
        self,
        routes: Routes,
        *,
        error_response: Callable[[Request, Exception], Response],
        limits: ServerLimits | None = None,
    ) -> None:
        self.routes = routes
        self.error_response = error_response
        self.limits = limits or ServerLimits()
        self.clock = DateClock()
        self.connections: set[HttpProtocol] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False,
                    ssl: ssl_module.SSLContext | None = None) -> None:
        """Listen on host:port; with `ssl`, HTTPS only (dtmx.security.tls)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(self), host or None, port,
            reuse_port=reuse_port or None, reuse_address=True, ssl=ssl,
        )

    async def dispatch(self, request: Request) -> Response:
        """The answer to one request: its route's handler, or 404/405 with a JSON message."""
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
            c.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
