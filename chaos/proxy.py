"""A TCP proxy in front of the store that pauses, drops, slows or cuts connections.

It runs inside the harness's event loop; every server connects to it instead of the store.
`cut_after_write` forwards the next client chunk that carries a write and then closes both
sides before the store's answer can come back: the write may have committed, and the
server cannot know (a crash between the store write and its acknowledgement).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from chaos.procs import free_port

# What a write looks like on the wire: SQL verbs (MySQL text protocol, PostgreSQL Parse and
# simple queries), PostgreSQL's Execute message, Redis's script calls.
_WRITE_MARKS = (b"INSERT", b"UPDATE", b"DELETE", b"COMMIT", b"insert", b"update", b"delete",
                b"commit", b"EVALSHA", b"evalsha", b"FCALL", b"fcall")


def _is_write(chunk: bytes) -> bool:
    return any(m in chunk for m in _WRITE_MARKS) or chunk[:1] == b"E"


class StoreProxy:
    """Listens on `port` (127.0.0.1) and forwards to `target`; faults come from the harness."""

    def __init__(self, target_port: int, *, port: int) -> None:
        self.target_port = target_port
        self.port = port
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.delay = 0.0
        self.cut_armed = False
        self.kill_armed = False
        #: kills the server whose store connection comes from this port; True if it did
        self.kill_owner: Callable[[int], bool] | None = None
        self.counts: Counter[str] = Counter()
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._cutting: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()

    # ---- faults ---------------------------------------------------------------------
    async def pause(self, seconds: float) -> None:
        """Forward nothing, either way, for `seconds`."""
        self.resumed.clear()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.resumed.set()

    async def slow(self, seconds: float, delay: float) -> None:
        """Delay every chunk by `delay` for `seconds`."""
        self.delay = delay
        try:
            await asyncio.sleep(seconds)
        finally:
            self.delay = 0.0

    def drop(self) -> None:
        """Close every open connection (the store restarting, as a client sees it)."""
        for a, b in list(self._conns):
            for w in (a, b):
                with contextlib.suppress(Exception):
                    w.transport.abort()
        self._conns.clear()

    def arm_cut(self) -> None:
        """Cut the next connection that forwards a write, right after forwarding it."""
        self.cut_armed = True

    def arm_kill(self) -> None:
        """kill -9 the server that sends the next write, right after forwarding it and
        before the store's answer reaches it: the write is in, the branch call never made."""
        self.kill_armed = True

    # ---- forwarding -----------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_w)
        self._conns.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_w, pair, upstream=True),
                                 self._pipe(up_r, writer, pair, upstream=False))
        finally:
            self._conns.discard(pair)
            self._cutting.discard(pair)
            for w in pair:
                with contextlib.suppress(Exception):
                    w.transport.abort()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter], *,
                    upstream: bool) -> None:
        try:
            while True:
                chunk = await src.read(65536)
                if not chunk:
                    break
                await self.resumed.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                if pair in self._cutting:  # the store's answer to a cut write never arrives
                    break
                dst.write(chunk)
                await dst.drain()
                if upstream and (self.cut_armed or self.kill_armed) and _is_write(chunk):
                    self._cutting.add(pair)
                    if self.kill_armed and self.kill_owner is not None:
                        self.kill_armed = False
                        port = int(pair[0].get_extra_info("peername")[1])
                        if self.kill_owner(port):
                            self.counts["killed_after_write"] += 1
                    else:
                        self.cut_armed = False
                        self.counts["cut_after_write"] += 1
                    # let the write reach the store, then cut before its answer comes back
                    await asyncio.sleep(0.002)
                    for w in pair:
                        w.transport.abort()
                    break
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.transport.abort()


class ProxyThread:
    """The store proxy on an event loop of its own, so the harness's load cannot stall it."""

    def __init__(self, target_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.proxy = StoreProxy(target_port, port=free_port())

    def start(self) -> None:
        self.thread.start()
        self.call(self.proxy.start())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def spawn(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.call(self.proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
