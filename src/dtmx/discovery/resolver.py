"""EtcdResolver: the live endpoints of one service, listed then watched in etcd."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dtmx.discovery.clients import EtcdClients, cancelled, first_call, why
from dtmx.discovery.target import (
    DEFAULT_CALL_TIMEOUT,
    DiscoveryError,
    EndpointTable,
    EtcdTarget,
)

log = logging.getLogger("dtmx.discovery")


class EtcdResolver:
    """The live endpoints of one service key, kept current by a watch.

    `start()` lists `<key>/` (DiscoveryError if etcd is unreachable) and starts a task that
    watches the prefix from the listed revision + 1. aetcd's watch does not survive an etcd
    restart, so after any error the task lists again and watches anew; listing (not just
    resuming from the last revision) also covers compaction and an etcd that lost its data.
    While etcd is down the last known endpoints keep being served.
    """

    def __init__(self, target: EtcdTarget, *, call_timeout: float = DEFAULT_CALL_TIMEOUT,
                 clients: EtcdClients | None = None) -> None:
        """`clients` shares channels with other etcd users (default: a client of its own)."""
        self.target = target
        self._clients = clients or EtcdClients()
        self.table = EndpointTable()
        self._call_timeout = call_timeout
        self._client: Any = None
        self._revision = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def endpoints(self) -> list[str]:
        """Distinct live endpoints (the cache, while etcd is down)."""
        return self.table.endpoints

    @property
    def started(self) -> bool:
        """Whether the listing was made and the watch runs."""
        return self._task is not None

    async def start(self) -> EtcdResolver:
        """List the endpoints and start watching; safe to call concurrently and again."""
        async with self._lock:
            if self._task is not None:
                return self
            shared = self._clients.in_use(self.target.address)
            self._client = self._clients.acquire(self.target.address, timeout=self._call_timeout)
            try:
                await first_call(self._load, shared_channel=shared, timeout=self._call_timeout)
            except Exception as e:
                self._client = None
                await self._clients.release(self.target.address)
                raise DiscoveryError(
                    f"etcd at {self.target.address} is not reachable: {why(e)}"
                ) from e
            self._task = asyncio.create_task(self._watch_loop(),
                                             name=f"etcd-watch {self.target.key}")
        return self

    async def pick(self) -> str:
        """The next endpoint, round-robin; DiscoveryError when none is registered."""
        if self._task is None:
            await self.start()
        endpoint = self.table.pick()
        if endpoint is None:
            raise DiscoveryError(f"no endpoint registered under {self.target.url()}")
        return endpoint

    async def _load(self) -> None:
        got = await self._client.get_prefix(self.target.prefix.encode())
        self.table.replace({bytes(kv.key).decode(): bytes(kv.value).decode() for kv in got})
        self._revision = int(got.header.revision)

    async def _watch_loop(self) -> None:
        from aetcd.rtypes import EventKind

        prefix = self.target.prefix.encode()
        backoff = 0.1
        fresh = True  # the listing start() made is current
        while True:
            try:
                if not fresh:
                    await self._load()
                watch = await self._client.watch_prefix(prefix, start_revision=self._revision + 1)
                if not fresh:
                    log.info("etcd watch on %s restored: %s", self.target.url(),
                             self.table.endpoints)
                fresh = False
                backoff = 0.1
                async for event in watch:
                    key = bytes(event.kv.key).decode()
                    if event.kind == EventKind.DELETE:
                        self.table.delete(key)
                    else:
                        self.table.put(key, bytes(event.kv.value).decode())
                    self._revision = max(self._revision, int(event.kv.mod_revision))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # etcd gone or restarted: serve the cache, retry
                if backoff == 0.1:
                    log.warning("etcd watch on %s lost (%s); serving cached %s",
                                self.target.url(), why(e), self.table.endpoints)
            fresh = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def stop(self) -> None:
        """Stop watching and give back the client. Never raises."""
        task, self._task = self._task, None
        await cancelled(task)
        if self._client is not None:
            self._client = None
            await self._clients.release(self.target.address)
