"""EtcdRegistration: one service instance kept registered in etcd (go-zero's layout)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from dtmx.discovery.clients import EtcdClients, cancelled, first_call, why
from dtmx.discovery.target import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_TTL,
    DiscoveryError,
    registration_key,
    with_port,
)

log = logging.getLogger("dtmx.discovery")


class EtcdRegistration:
    """Keeps `<key>/<lease id>` = `value` in etcd while running (go-zero's layout).

    `start()` registers once (DiscoveryError if etcd is unreachable) and starts a task that
    refreshes the lease every TTL/3. If etcd goes away the task keeps retrying quietly; when
    it is back, the same lease is refreshed if etcd still knows it, otherwise (TTL 0: it
    expired, or etcd lost its data) a new lease is granted and the key put again.
    `stop()` revokes the lease, which deletes the key.
    """

    def __init__(
        self,
        etcd: str,
        key: str,
        value: str,
        *,
        ttl: int = DEFAULT_TTL,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        clients: EtcdClients | None = None,
    ) -> None:
        """`etcd` is `host:port` or an etcd:// URL (its hosts are used, its key ignored);
        `clients` shares channels with other etcd users (default: a client of its own)."""
        hosts = etcd.partition("://")[2] if "://" in etcd else etcd
        self.address = with_port(hosts.split("/", 1)[0].split(",")[0].strip())
        self.key = key.strip("/")
        self.value = value
        self.ttl = max(1, int(ttl))
        self._call_timeout = call_timeout
        self._clients = clients or EtcdClients()
        self._client: Any = None
        self._lease_id: int | None = None
        self._granted_ttl = self.ttl
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def lease_id(self) -> int | None:
        """The current lease, None while not registered."""
        return self._lease_id

    @property
    def full_key(self) -> str | None:
        """The key this instance is registered under, None while not registered."""
        return None if self._lease_id is None else registration_key(self.key, self._lease_id)

    async def start(self) -> EtcdRegistration:
        """Register now and keep the registration alive in the background."""
        if self._task is not None:
            return self
        shared = self._clients.in_use(self.address)
        self._client = self._clients.acquire(self.address, timeout=self._call_timeout)
        try:
            await first_call(self._register, shared_channel=shared, timeout=self._call_timeout)
        except Exception as e:
            await self._clients.release(self.address)
            self._client = None
            raise DiscoveryError(f"etcd at {self.address} is not reachable: {why(e)}") from e
        self._task = asyncio.create_task(self._keep_alive(), name=f"etcd-keepalive {self.key}")
        return self

    async def _register(self) -> None:
        lease = await self._client.lease(self.ttl)
        try:
            await self._client.put(registration_key(self.key, lease.id).encode(),
                                   self.value.encode(), lease=lease.id)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._client.revoke_lease(lease.id)
            raise
        self._lease_id = lease.id
        self._granted_ttl = max(1, int(lease.ttl or self.ttl))
        log.info("registered %s = %s in etcd %s (lease ttl %ds)",
                 registration_key(self.key, lease.id), self.value, self.address, self._granted_ttl)

    async def _refresh(self) -> None:
        if self._lease_id is None:
            await self._register()
            return
        reply = await self._client.refresh_lease(self._lease_id)
        if reply is None or reply.TTL <= 0:
            # etcd no longer knows the lease (expired while we could not reach it, or etcd
            # lost its data): the key is gone too, so register anew.
            log.info("etcd lease %x of %s expired; registering again", self._lease_id, self.key)
            self._lease_id = None
            await self._register()

    async def _keep_alive(self) -> None:
        while True:
            interval = self._granted_ttl / 3
            if self._failing:  # come back quickly once etcd is up again
                interval = min(interval, 1.0)
            await asyncio.sleep(interval)
            try:
                await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any etcd/grpc failure: retry on the next round
                if not self._failing:
                    log.warning("etcd %s unreachable, keeping %s registered when it returns: %s",
                                self.address, self.key, why(e))
                self._failing = True
                continue
            if self._failing:
                log.info("etcd %s reachable again; %s registered", self.address, self.key)
                self._failing = False

    async def stop(self) -> None:
        """Stop refreshing and revoke the lease (the key disappears). Never raises."""
        task, self._task = self._task, None
        await cancelled(task)
        if self._client is None:
            return
        lease_id, self._lease_id = self._lease_id, None
        if lease_id is not None:
            try:
                await self._client.revoke_lease(lease_id)
            except Exception as e:  # the lease still expires after its TTL
                log.info("could not revoke etcd lease of %s (%s); it expires in %ds",
                         self.key, why(e), self._granted_ttl)
        await self._clients.release(self.address)
        self._client = None

    async def __aenter__(self) -> EtcdRegistration:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
