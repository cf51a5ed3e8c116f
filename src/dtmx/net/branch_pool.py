"""Keep-alive HTTP/1.1 connection pools per (host, port) for branch calls.

Why not aiohttp here: a branch call is one small request and one small answer, and
aiohttp's general machinery (URL objects, header multidicts, timeout contexts, streams)
cost about a fifth of the server's CPU (bench/REPORT.md has the side-by-side numbers).
This pool writes the request bytes directly on an asyncio Protocol and parses the answer
with httptools as it arrives (`branch_wire.ResponseReader`).

Rules it keeps:
- a connection goes back to the pool only after a complete response that allows keep-alive;
  a timeout, a cancellation, any error or an answer over `max_response` bytes closes it;
- every connection is opened by `Http1Pool.connect` (one place to check where it goes);
- at most `max_idle_per_host` idle connections per (host, port), closed after `idle_timeout`;
- at most `limit` open connections in all (idle ones of other hosts are closed to make room);
- a stale keep-alive connection (the server closed it while idle, and we learn it only when
  the request fails) is retried once on a fresh connection, but only when the connection was
  reused and not one byte of the answer had arrived. The subtle case: a server may have
  read and executed the request and then died before answering; the retry then runs the
  branch twice. We accept that, as browsers and aiohttp do, because DTM branches must be
  idempotent anyway (DTM itself calls again after any error) and a fresh connection that
  fails the same way is not retried again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from dtmx.net.branch_wire import DEFAULT_MAX_RESPONSE, HttpProtocolError, ResponseReader, Target

log = logging.getLogger(__name__)

# bodies larger than this are written after the head instead of being copied into it
_JOIN_MAX = 64 * 1024


class StaleConnection(ConnectionError):
    """A reused keep-alive connection closed before any byte of the answer arrived."""


class _Conn(asyncio.Protocol):
    """One keep-alive connection; carries one request/response exchange at a time."""

    __slots__ = (
        "closed", "got_bytes", "idle_since", "key", "parser", "pool", "reused", "timer",
        "transport", "waiter",
    )

    def __init__(self, pool: Http1Pool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.parser: ResponseReader | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.reused = False
        self.got_bytes = False
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
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
        parser = self.parser
        if self.waiter is not None and parser is not None:
            try:
                if parser.feed_eof():
                    self._finish(parser.status, parser.body, False)
            except HttpProtocolError as e:
                self._fail(e)
        return False  # let the transport close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
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
              loop: asyncio.AbstractEventLoop) -> asyncio.Future[tuple[int, bytes, bool]]:
        """Send one request; the future gets (status, body, keep_alive) or an exception."""
        waiter: asyncio.Future[tuple[int, bytes, bool]] = loop.create_future()
        self.waiter = waiter
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
        self._clear()
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body, keep_alive))

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        self._clear()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def _clear(self) -> None:
        self.waiter = None
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


@dataclass(frozen=True, slots=True)
class PoolStats:
    """What a pool holds: connections open now, idle now, and opened since it started
    (a count growing with the calls means keep-alive is not working with some branch)."""

    open: int
    idle: int
    connects: int


class Http1Pool:
    """Pooled keep-alive HTTP/1.1 requests over plain TCP, bound to one event loop.

    `limit` open connections in all; `max_idle_per_host` kept idle per (host, port) for
    `idle_timeout` seconds; answers over `max_response` bytes (as read or decoded) fail
    with `ResponseTooLarge` and their connection is dropped.
    """

    def __init__(
        self,
        *,
        limit: int = 512,
        max_idle_per_host: int = 128,
        idle_timeout: float = 30.0,
        max_response: int = DEFAULT_MAX_RESPONSE,
        resolve: Callable[[str, int], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.limit = limit
        #: the addresses a host may be dialled at (BranchPolicy's connect-time check)
        self.resolve = resolve
        self.max_idle_per_host = max_idle_per_host
        self.idle_timeout = idle_timeout
        self.max_response = max_response
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: dict[tuple[str, int], collections.deque[_Conn]] = {}
        self._open = 0
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._connects = 0

    def stats(self) -> PoolStats:
        """Connections open, idle and opened so far (exported as metrics)."""
        idle = sum(len(q) for q in self._idle.values())
        return PoolStats(open=self._open, idle=idle, connects=self._connects)

    async def request(
        self, target: Target, data: bytes, body: bytes | None, timeout: float
    ) -> tuple[int, bytes]:
        """Send one request (head in `data`, optional separate `body`); (status, body).

        Raises TimeoutError, OSError (connect errors, resets) or HttpProtocolError
        (`ResponseTooLarge` for an answer over `max_response` bytes).
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._rebind(loop)
        deadline = loop.time() + timeout
        if body is not None and len(body) <= _JOIN_MAX:
            data, body = data + body, None
        key = target.key
        for attempt in (0, 1):
            # the retry after a stale connection always takes a fresh one
            conn = self._take_idle(key) if attempt == 0 else None
            if conn is None:
                conn = await self._connect(target, deadline, loop)
            waiter = conn.start(data, body, deadline, loop)
            try:
                status, answer, keep_alive = await waiter
            except StaleConnection:
                if attempt == 0:
                    continue
                raise ConnectionResetError("connection closed before any response") from None
            except BaseException:
                conn._clear()
                conn.abort()
                raise
            # an early answer (before the whole body went out) leaves bytes in flight
            transport = conn.transport
            if keep_alive and not conn.closed and transport is not None \
                    and not transport.get_write_buffer_size():
                self._release(conn, loop)
            else:
                conn.abort()
            return status, answer
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close every idle connection; requests in flight close theirs when they end."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for q in list(self._idle.values()):
            while q:
                q.pop().abort()
        self._idle.clear()

    # pool internals

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        # connections of another (closed) loop are unusable; forget them
        for q in self._idle.values():
            for c in q:
                c.closed = True
        self._idle.clear()
        self._open = 0
        self._slot_waiters.clear()
        self._sweeper = None
        self._loop = loop

    def _take_idle(self, key: tuple[str, int]) -> _Conn | None:
        q = self._idle.get(key)
        while q:
            conn = q.pop()  # most recently used first: the others age out
            transport = conn.transport
            if not conn.closed and transport is not None and not transport.is_closing():
                conn.reused = True
                return conn
            conn.abort()
        return None

    def _release(self, conn: _Conn, loop: asyncio.AbstractEventLoop) -> None:
        q = self._idle.get(conn.key)
        if q is None:
            q = self._idle[conn.key] = collections.deque()
        if len(q) >= self.max_idle_per_host:
            conn.abort()
            return
        conn.idle_since = loop.time()
        q.append(conn)
        if self._slot_waiters:
            self._wake_one()
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.idle_timeout / 2, self._sweep)

    def _closed(self, conn: _Conn) -> None:
        """Bookkeeping when a connection ends (it may still sit in an idle deque)."""
        self._open -= 1
        if self._slot_waiters:
            self._wake_one()

    def _wake_one(self) -> None:
        while self._slot_waiters:
            w = self._slot_waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def _sweep(self) -> None:
        self._sweeper = None
        loop = self._loop
        if loop is None:
            return
        oldest_allowed = loop.time() - self.idle_timeout
        left = 0
        for key, q in list(self._idle.items()):
            while q and (q[0].closed or q[0].idle_since <= oldest_allowed):
                q.popleft().abort()
            if not q:
                del self._idle[key]
            left += len(q)
        if left:
            self._sweeper = loop.call_later(self.idle_timeout / 2, self._sweep)

    def _evict_other_idle(self) -> bool:
        """Close the oldest idle connection of any host to free a slot."""
        best: _Conn | None = None
        for q in self._idle.values():
            if q and (best is None or q[0].idle_since < best.idle_since):
                best = q[0]
        if best is None:
            return False
        self._idle[best.key].popleft()
        best.abort()
        return True

    async def _connect(
        self, target: Target, deadline: float, loop: asyncio.AbstractEventLoop
    ) -> _Conn:
        while self._open >= self.limit:
            idle = self._take_idle(target.key)
            if idle is not None:
                return idle
            if self._evict_other_idle():
                break
            w: asyncio.Future[None] = loop.create_future()
            self._slot_waiters.append(w)
            try:
                async with asyncio.timeout_at(deadline):
                    await w
            except BaseException:
                if w.done() and not w.cancelled():
                    self._wake_one()  # we were woken but leave: pass the turn on
                raise
            finally:
                w.cancel()
        self._open += 1
        conn = _Conn(self, target.key)
        try:
            async with asyncio.timeout_at(deadline):
                await self.connect(conn, target.host, target.port)
        except BaseException:
            if not conn.closed:
                conn.closed = True
                self._closed(conn)
            if conn.transport is not None:
                conn.transport.abort()
            raise
        self._connects += 1
        return conn

    async def connect(self, protocol: asyncio.Protocol, host: str, port: int) -> None:
        """Open one TCP connection to host:port for `protocol`: the only place this pool
        opens connections, so a policy on where branches may go applies to all of them."""
        loop = asyncio.get_running_loop()
        if self.resolve is not None:
            host = (await self.resolve(host, port))[0]  # dial what was judged
        await loop.create_connection(lambda: protocol, host, port)

