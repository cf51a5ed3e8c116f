"""A small pipelined asyncio RESP2 client: just what the Redis store needs, and cheap.

Why not redis-py: under load its per-command machinery (connection checkout with timeouts,
retry wrappers, argument deprecation shims, script objects) cost more server CPU than the
transactions themselves. Here each command is one packed write and one future:

- A few long-lived connections, each pipelined: a command is written as soon as it is issued
  (writes made in the same loop turn go out in one send) and its future waits in a FIFO;
  replies arrive in order, so each parsed reply resolves the oldest future. Concurrent
  callers share a connection with no checkout and no lock.
- A lost connection fails every pending future with `ConnectionError` and is replaced on the
  next call. Nothing is ever re-sent: a command whose reply was lost may have been applied.
- Replies are parsed and commands packed by hiredis (C); the pure-Python reader this
  module once had is gone (hiredis is a dependency of the redis extra).

Errors: `ReplyError` for an error reply, `ConnectionError` (or `OSError`) when Redis cannot
be reached; the store translates both into dtmx errors.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlparse

import hiredis


class ReplyError(Exception):
    """An error reply from Redis (its text, e.g. "NOSCRIPT No matching script")."""


class ProtocolError(Exception):
    """Redis sent bytes that are not RESP2."""


Arg = str | bytes | int | float


# ---- packing and parsing: hiredis (C) -------------------------------------------------
def new_reader() -> Any:
    """A hiredis reply reader: feed bytes, `gets()` the next reply or False. Bulk and
    status strings come back as bytes, integers as int, nil as None, arrays as lists,
    error replies as `ReplyError` instances (returned, not raised)."""
    return hiredis.Reader(replyError=ReplyError, protocolError=ProtocolError)


def pack_command(args: tuple[Arg, ...]) -> bytes:
    """One command as a RESP array of bulk strings (hiredis packs it in C)."""
    # (hiredis's stub types the tuple as one element; any length is packed)
    packed: bytes = hiredis.pack_command(cast(Any, args))
    return packed


# ---- address --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where Redis is and how to log in: redis://[[user]:password@]host[:port][/db]."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str = ""
    password: str = field(default="", repr=False)
    #: rediss:// - TLS, verified against `ca_file` (or the system's CAs when empty)
    tls: bool = False
    ca_file: str = ""

    @classmethod
    def from_url(cls, url: str, *, ca_file: str = "") -> RedisAddress:
        """redis:// or rediss:// (TLS; `?ssl_ca_certs=PATH` or `ca_file` names the CA)."""
        u = urlparse(url)
        if u.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// URL: scheme {u.scheme!r}")
        query = dict(parse_qsl(u.query))
        path = u.path.strip("/")
        try:
            db = int(path) if path else 0
        except ValueError:
            raise ValueError(f"redis URL: database must be a number, not {path!r}") from None
        return cls(
            host=u.hostname or "127.0.0.1",
            port=u.port or 6379,
            db=db,
            username=unquote(u.username or ""),
            password=unquote(u.password or ""),
            tls=u.scheme == "rediss",
            ca_file=query.get("ssl_ca_certs", ca_file),
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The verifying TLS context for rediss:// (None for redis://)."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def handshake(self) -> list[tuple[Arg, ...]]:
        """Commands to send on each new connection before anything else."""
        cmds: list[tuple[Arg, ...]] = []
        if self.password:
            user = (self.username,) if self.username else ()
            cmds.append(("AUTH", *user, self.password))
        if self.db:
            cmds.append(("SELECT", self.db))
        return cmds


# ---- one connection -------------------------------------------------------------------
class _Conn(asyncio.Protocol):
    """One pipelined connection: a FIFO of futures resolved by replies in order.

    A watchdog aborts the connection when commands wait and no reply came for a whole
    `reply_timeout` (a stopped or wedged Redis sends no RST): callers then get an error
    instead of waiting forever. It costs nothing per command, so a stall is noticed after
    between one and two `reply_timeout`s.
    """

    def __init__(self, reply_timeout: float | None) -> None:
        self._reader = new_reader()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._reply_timeout = reply_timeout
        self._replies = 0  # data_received calls, read by the watchdog only
        self._replies_seen = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only look-alikes
        self._transport = cast(asyncio.Transport, transport)
        if self._reply_timeout is not None:
            self._watchdog = self._loop.call_later(self._reply_timeout, self._watch)

    def _watch(self) -> None:
        assert self._reply_timeout is not None
        if self._waiters and self._replies == self._replies_seen:
            self._fail(ConnectionError(f"redis: no reply within {self._reply_timeout}s"))
            if self._transport is not None:
                self._transport.abort()
            return
        self._replies_seen = self._replies
        self._watchdog = self._loop.call_later(self._reply_timeout, self._watch)

    def send(self, data: bytes) -> asyncio.Future[Any]:
        """Queue one packed command; the future gets its reply (or the error)."""
        if self.closed:
            raise ConnectionError("redis connection closed")
        fut = self._loop.create_future()
        self._waiters.append(fut)
        if not self._out:
            # gather the commands issued in this loop turn into one send
            self._loop.call_soon(self._flush)
        self._out.append(data)
        return fut

    @property
    def batching(self) -> bool:
        """Whether commands of this loop turn are waiting to be sent."""
        return bool(self._out)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and not self.closed:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def data_received(self, data: bytes) -> None:
        self._replies += 1
        reader = self._reader
        try:
            reader.feed(data)
            waiters = self._waiters
            while (reply := reader.gets()) is not False:
                fut = waiters.popleft()
                if fut.done():  # the caller was cancelled; the reply is dropped
                    continue
                if isinstance(reply, ReplyError):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
        except (ProtocolError, IndexError, ValueError) as e:
            # garbage or a reply nobody asked for: the stream cannot be trusted any more
            self._fail(ConnectionError(f"redis protocol error: {e!r}"))
            if self._transport is not None:
                self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"redis connection lost: {exc or 'closed by server'}"))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        self._out.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)

    def close(self) -> None:
        self._fail(ConnectionError("redis connection closed"))
        if self._transport is not None:
            self._transport.close()


# ---- the client -----------------------------------------------------------------------
class RespClient:
    """`connections` pipelined connections to one Redis, opened lazily, taking turns by
    loop turn (each turn's commands go out together on one of them).

    `connect_timeout` bounds connecting and logging in; `reply_timeout` (None = never) is
    how long a connection may leave commands unanswered before it is dropped (`_Conn`).
    """

    def __init__(
        self,
        address: RedisAddress,
        *,
        connections: int = 1,
        connect_timeout: float = 5.0,
        reply_timeout: float | None = 15.0,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be >= 1")
        self.address = address
        self._ssl = address.ssl_context()  # built once: it reads the CA file
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout
        self._conns: list[_Conn | None] = [None] * connections
        self._locks = [asyncio.Lock() for _ in range(connections)]
        self._next = 0

    async def execute(self, *args: Arg, key: str = "") -> Any:
        """Send one command and return its reply; raises ReplyError or ConnectionError.

        `key` routes a command in a cluster (`ClusterClient`); one node ignores it."""
        conn = self._ready() or await self._reconnect(self._next)
        return await conn.send(pack_command(args))

    async def execute_asking(self, *args: Arg) -> Any:
        """`ASKING` then the command, on one connection in one send (a cluster's ASK
        redirect is honoured only for the very next command of that connection)."""
        conn = self._ready() or await self._reconnect(self._next)
        asking = conn.send(pack_command(("ASKING",)))
        reply = conn.send(pack_command(args))
        await asking
        return await reply

    def _ready(self) -> _Conn | None:
        """The open connection this loop turn's commands go to (None: reconnect it)."""
        i = self._next
        conn = self._conns[i]
        if conn is None or not conn.batching:
            # a new batch: the commands of one loop turn go to one connection and one send
            # (measured: round robin per command split batches and cost ~10% more CPU)
            i = self._next = (i + 1) % len(self._conns)
            conn = self._conns[i]
        return None if conn is None or conn.closed else conn

    async def _reconnect(self, i: int) -> _Conn:
        async with self._locks[i]:
            conn = self._conns[i]
            if conn is None or conn.closed:
                conn = await self._open()
                self._conns[i] = conn
            return conn

    async def _open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        a = self.address
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(self._reply_timeout), a.host, a.port,
                    ssl=self._ssl, server_hostname=a.host if self._ssl else None,
                )
                sent = [conn.send(pack_command(c)) for c in a.handshake()]
                replies = await asyncio.gather(*sent, return_exceptions=True)
        except TimeoutError:
            if conn is not None:
                conn.close()
            raise ConnectionError(
                f"redis at {a.host}:{a.port}: no connection within {self._connect_timeout}s"
            ) from None
        except BaseException:  # cancelled or refused: leave no half-open connection behind
            if conn is not None:
                conn.close()
            raise
        for r in replies:
            if isinstance(r, BaseException):
                conn.close()
                # a wrong password or database: the connection is useless, say so plainly
                raise ConnectionError(f"redis at {a.host}:{a.port} refused the login: {r}")
        return conn

    async def close(self) -> None:
        """Close every connection; pending commands fail with ConnectionError."""
        for i, conn in enumerate(self._conns):
            if conn is not None:
                conn.close()
                self._conns[i] = None
