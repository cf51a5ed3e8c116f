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

from dtmx.net.branch_conn import FollowOn, PoolConn, StaleConnection
from dtmx.net.branch_wire import DEFAULT_MAX_RESPONSE, Target

log = logging.getLogger(__name__)

# bodies larger than this are written after the head instead of being copied into it
_JOIN_MAX = 64 * 1024


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
        self._idle: dict[tuple[str, int], collections.deque[PoolConn]] = {}
        self._open = 0
        self._slot_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._connects = 0

    def stats(self) -> PoolStats:
        """Connections open, idle and opened so far (exported as metrics)."""
        idle = sum(len(q) for q in self._idle.values())
        return PoolStats(open=self._open, idle=idle, connects=self._connects)

    async def request(
        self, target: Target, data: bytes, body: bytes | None, timeout: float,
        follow: FollowOn | None = None,
    ) -> tuple[int, bytes]:
        """Send one request (head in `data`, optional separate `body`); (status, body).

        Raises TimeoutError, OSError (connect errors, resets) or HttpProtocolError
        (`ResponseTooLarge` for an answer over `max_response` bytes).

        With `follow`, the request it names (if any) goes out on this connection from the
        protocol's callback as soon as a complete keep-alive answer is read, before this
        coroutine resumes: a caller's next request does not wait for the caller to be
        scheduled and to handle this answer.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._rebind(loop)
        deadline = loop.time() + timeout
        if body is not None and len(body) <= _JOIN_MAX:
            data, body = data + body, None
        conn = self._take_idle(target.key)
        if conn is None:
            conn = await self._connect(target, deadline, loop)
        waiter = conn.start(data, body, deadline, loop, follow)
        # the first exchange inline rather than through _exchange: one coroutine frame less
        # to create and unwind on every branch call
        try:
            status, answer, keep_alive = await waiter
        except StaleConnection:
            return await self._exchange(None, None, target, data, body, deadline, loop, follow)
        except BaseException:
            conn._clear()
            conn.abort()
            raise
        self._after(conn, keep_alive, loop)
        return status, answer

    async def _exchange(
        self, conn: PoolConn | None, waiter: asyncio.Future[tuple[int, bytes, bool]] | None,
        target: Target, data: bytes, body: bytes | None, deadline: float,
        loop: asyncio.AbstractEventLoop, follow: FollowOn | None,
    ) -> tuple[int, bytes]:
        """Await `waiter` on `conn` as `request` does; with no connection, send on a fresh
        one: the retry after a stale connection, never retried again."""
        if conn is None or waiter is None:
            conn = await self._connect(target, deadline, loop)
            waiter = conn.start(data, body, deadline, loop, follow)
            may_retry = False
        else:
            may_retry = True
        try:
            status, answer, keep_alive = await waiter
        except StaleConnection:
            if may_retry:
                return await self._exchange(None, None, target, data, body, deadline, loop,
                                            follow)
            raise ConnectionResetError("connection closed before any response") from None
        except BaseException:
            conn._clear()
            conn.abort()
            raise
        self._after(conn, keep_alive, loop)
        return status, answer

    def _after(self, conn: PoolConn, keep_alive: bool, loop: asyncio.AbstractEventLoop) -> None:
        """Back to the pool or closed, once its answer is read (unless it went on to carry
        a follow-up request: then that exchange owns it)."""
        if conn.waiter is not None:
            return
        # an early answer (before the whole body went out) leaves bytes in flight
        transport = conn.transport
        if keep_alive and not conn.closed and transport is not None \
                and not transport.get_write_buffer_size():
            self._release(conn, loop)
        else:
            conn.abort()

    def _follow_on(self, conn: PoolConn, follow: FollowOn, status: int, body: bytes,
                   keep_alive: bool) -> None:
        """Send what `follow` names next, now that `conn`'s answer (status, body) is read
        and complete: on `conn` itself if it goes to the same host and `conn` can carry
        it, else on an idle connection to its host; nothing if there is none (a new
        connection would take a wait this callback must not make)."""
        loop = self._loop
        if loop is None:
            return
        try:
            nxt = follow.next_request(status, body)
        except Exception:  # a bug there must not cost this answer: the caller goes on
            log.exception("choosing the request to follow failed")
            return
        if nxt is None:
            return
        target, data, more, timeout, then = nxt
        transport = conn.transport
        use: PoolConn | None = conn
        if target.key != conn.key or not keep_alive or conn.closed or transport is None \
                or transport.is_closing() or transport.get_write_buffer_size():
            use = self._take_idle(target.key)
        if use is None:
            return
        if more is not None and len(more) <= _JOIN_MAX:
            data, more = data + more, None
        deadline = loop.time() + timeout
        use.reused = True
        waiter = use.start(data, more, deadline, loop, then)
        follow.sent(self._exchange(use, waiter, target, data, more, deadline, loop, then))

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

    def _take_idle(self, key: tuple[str, int]) -> PoolConn | None:
        q = self._idle.get(key)
        while q:
            conn = q.pop()  # most recently used first: the others age out
            transport = conn.transport
            if not conn.closed and transport is not None and not transport.is_closing():
                conn.reused = True
                return conn
            conn.abort()
        return None

    def _release(self, conn: PoolConn, loop: asyncio.AbstractEventLoop) -> None:
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

    def _closed(self, conn: PoolConn) -> None:
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
        best: PoolConn | None = None
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
    ) -> PoolConn:
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
        conn = PoolConn(self, target.key)
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

