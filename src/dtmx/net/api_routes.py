"""What the API's handlers see of HTTP (a request, a response, the route table) and the
bytes of an answer. Independent of the connection handling in `api_server`.
"""

from __future__ import annotations

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
