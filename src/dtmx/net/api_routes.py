"""What the API's handlers see of HTTP (a request, a response, the route table) and the
bytes of an answer. Independent of the connection handling in `api_server`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import orjson


@dataclass(slots=True)
class Request:
    """One parsed HTTP request, as handlers see it."""

    method: str
    path: str
    query: dict[str, str]  # first value of each parameter, like aiohttp's MultiDict.get
    headers: dict[str, str]  # lower-case names
    body: bytes
    match_info: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Response:
    """One HTTP answer: body, status and content type."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"


def json_response(data: Any, status: int = 200) -> Response:
    """`data` as a JSON answer with `status`."""
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


class IdleTimer:
    """Calls `expire` once `timeout` seconds pass after the last `arm` with no `disarm`
    since. A connection arms it after each answer and disarms it for each request; one
    timer checks a deadline instead of a call_later and a cancel per arm and disarm (two
    each per request, more than the rest of a request's bookkeeping): when it fires early
    it sleeps again until the deadline."""

    __slots__ = ("_at", "_expire", "_handle", "_loop", "_timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float,
                 expire: Callable[[], None]) -> None:
        self._loop, self._timeout, self._expire = loop, timeout, expire
        self._at: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        """Expire `timeout` seconds from now, unless armed again or disarmed before."""
        self._at = self._loop.time() + self._timeout
        if self._handle is None:
            self._handle = self._loop.call_later(self._timeout, self._check)

    def disarm(self) -> None:
        """Do not expire until armed again."""
        self._at = None

    def cancel(self) -> None:
        """Disarm and drop the timer (the connection is gone)."""
        self._at = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._at is None:
            return  # disarmed: the next arm starts a timer again
        left = self._at - self._loop.time()
        if left > 0:
            self._handle = self._loop.call_later(left, self._check)
        else:
            self._at = None
            self._expire()


class DateClock:
    """The Date header, formatted once per second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def date(self) -> bytes:
        """The HTTP Date header value, formatted once per second."""
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


def encode(response: Response, keep_alive: bool, date: bytes) -> bytes:
    """The bytes of one answer: status line, our headers, the body."""
    head = _STATUS_LINES.get(response.status) or _status_line(response.status)
    body = response.body
    return b"%sContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\nServer: dtmx\r\n%s\r\n%s" % (
        head, response.content_type.encode(), len(body), date,
        b"" if keep_alive else b"Connection: close\r\n", body)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one connection may make the server hold (defaults = settings' `Limits`)."""

    #: request body bytes; larger is 413
    max_body: int = 16 * 1024 * 1024
    #: request line and headers, bytes; larger is 431
    max_header: int = 64 * 1024
    #: complete requests parsed and waiting behind the one being handled
    max_pipelined: int = 16
    #: answer bytes waiting for a client that does not read
    max_buffered: int = 4 * 1024 * 1024
    #: seconds a connection may sit idle, or take to send one request
    idle_timeout: float = 75.0
