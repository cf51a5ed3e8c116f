"""One keep-alive HTTP/1.1 connection of the branch pool (`branch_pool.Http1Pool`): an
asyncio Protocol carrying one request/response exchange at a time, its answer parsed with
httptools as it arrives (`branch_wire.ResponseReader`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol, cast

from dtmx.net.branch_wire import HttpProtocolError, ResponseReader, Target

if TYPE_CHECKING:
    from dtmx.net.branch_pool import Http1Pool


class StaleConnection(ConnectionError):
    """A reused keep-alive connection closed before any byte of the answer arrived."""


#: a request as the pool sends it: target, head, body sent after the head (or None),
#: timeout in seconds, and what may follow it on its connection
Request = tuple[Target, bytes, "bytes | None", float, "FollowOn | None"]


class FollowOn(Protocol):
    """A request that may go out on a connection the moment its exchange ends with a
    complete keep-alive answer, from the protocol's callback (see Http1Pool.request)."""

    def next_request(self, status: int, body: bytes) -> Request | None:
        """The request to send now on the same connection (same host and port), given
        the answer just read, or None. Must be quick and must not raise."""

    def sent(self, exchange: Coroutine[Any, Any, tuple[int, bytes]]) -> None:
        """The request went out; awaiting `exchange` (once) gives (status, body) as
        `Http1Pool.request` does, with the same errors."""


class PoolConn(asyncio.Protocol):
    """One keep-alive connection; carries one request/response exchange at a time."""

    __slots__ = (
        "closed", "follow", "got_bytes", "idle_since", "key", "parser", "pool", "reused",
        "timer", "transport", "waiter",
    )

    def __init__(self, pool: Http1Pool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.parser: ResponseReader | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.follow: FollowOn | None = None
        self.closed = False
        self.reused = False
        self.got_bytes = False
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport the exchanges are written to."""
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Feed the answer in progress; bytes nobody asked for close the connection."""
        waiter = self.waiter
        parser = self.parser
        if waiter is None or parser is None:  # unasked-for bytes on an idle connection
            self.abort()
            return
        self.got_bytes = True
        try:
            done = parser.feed(data)
        except HttpProtocolError as e:
            self._fail(e)
            return
        if done:
            self._finish(parser.status, parser.body, parser.keep_alive)

    def eof_received(self) -> bool:
        """An answer that ends with the connection is complete now; then close."""
        parser = self.parser
        if self.waiter is not None and parser is not None:
            try:
                if parser.feed_eof():
                    self._finish(parser.status, parser.body, False)
            except HttpProtocolError as e:
                self._fail(e)
        return False  # let the transport close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        """Out of the pool; an exchange in flight fails (a stale reuse as such)."""
        if not self.closed:
            self.closed = True
            self.pool._closed(self)
        if self.waiter is not None:
            if self.reused and not self.got_bytes:
                self._fail(StaleConnection("keep-alive connection closed by the server"))
            else:
                msg = "connection closed before the response was complete"
                self._fail(exc or ConnectionResetError(msg))

    # the exchange

    def start(self, data: bytes, body: bytes | None, deadline: float,
              loop: asyncio.AbstractEventLoop, follow: FollowOn | None = None
              ) -> asyncio.Future[tuple[int, bytes, bool]]:
        """Send one request; the future gets (status, body, keep_alive) or an exception.
        `follow` is asked for a next request once a complete keep-alive answer is read."""
        waiter: asyncio.Future[tuple[int, bytes, bool]] = loop.create_future()
        self.waiter = waiter
        self.follow = follow
        self.parser = ResponseReader(self.pool.max_response)
        self.got_bytes = False
        self.timer = loop.call_at(deadline, self._on_timeout)
        transport = self.transport
        assert transport is not None
        transport.write(data)
        if body is not None:
            transport.write(body)
        return waiter

    def _on_timeout(self) -> None:
        self.timer = None
        self._fail(TimeoutError())
        self.abort()  # the answer may still come: this connection cannot be reused

    def _finish(self, status: int, body: bytes, keep_alive: bool) -> None:
        waiter = self.waiter
        follow = self.follow
        self._clear()
        if waiter is not None and not waiter.done():
            if follow is not None:  # before the waiter's task wakes up
                self.pool._follow_on(self, follow, status, body, keep_alive)
            waiter.set_result((status, body, keep_alive))

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        self._clear()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def _clear(self) -> None:
        self.waiter = None
        self.follow = None
        self.parser = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def abort(self) -> None:
        """Close now, dropping anything unsent or unread."""
        if not self.closed:
            self.closed = True
            self.pool._closed(self)
        if self.transport is not None:
            self.transport.abort()
