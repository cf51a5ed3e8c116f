"""etcd building blocks for service discovery: URL parsing, endpoint table, lease, watch.

The public API (and how the pieces fit) is described in `dtmx.discovery`; this module holds
the parts. Layout in etcd is go-zero's: an instance of service `<key>` is the key
`<key>/<lease id in decimal>` whose value is its `host:port`, attached to a lease the
instance keeps alive. Readers list the prefix `<key>/` and watch it.

aetcd is imported lazily (inside functions) so importing this module costs nothing on the
SDK side and works where aetcd is not installed until etcd is actually used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dtmx.errors import DtmxError

log = logging.getLogger("dtmx.discovery")

DEFAULT_ETCD_PORT = 2379
DEFAULT_TTL = 10
DEFAULT_CALL_TIMEOUT = 3.0

# grpc's reconnect backoff grows to 120 s by default: after an etcd restart the lease
# refresh and the watch would stay failed that long. Keepalive pings detect a silently
# dead connection (etcd's default enforcement allows one every 5 s).
_CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2000,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}


class DiscoveryError(DtmxError):
    """Service discovery failed."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


# ---------------------------------------------------------------- pure logic


@dataclass(frozen=True, slots=True)
class EtcdTarget:
    """An `etcd://host:port[,host:port...]/key` URL, split."""

    hosts: tuple[str, ...]  # "host:port", at least one
    key: str  # the service key, without leading or trailing "/"

    @property
    def address(self) -> str:
        """The etcd endpoint used (the first host: aetcd speaks to one endpoint)."""
        return self.hosts[0]

    @property
    def prefix(self) -> str:
        """Where the instances of this service live: `<key>/`."""
        return service_prefix(self.key)

    def url(self) -> str:
        return f"etcd://{','.join(self.hosts)}/{self.key}"


def parse_etcd_url(url: str) -> EtcdTarget:
    """Parse `etcd://host[:port][,host[:port]]/key`; raises DiscoveryError when malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "etcd":
        raise DiscoveryError(f"not an etcd URL: {url!r} (expected etcd://host:2379/key)")
    hosts_part, _, key = rest.partition("/")
    key = key.strip("/")
    hosts = tuple(_with_port(h.strip()) for h in hosts_part.split(",") if h.strip())
    if not hosts or not key:
        raise DiscoveryError(f"bad etcd URL {url!r}: expected etcd://host:2379/key")
    return EtcdTarget(hosts=hosts, key=key)


def _with_port(host: str) -> str:
    if host.startswith("["):  # [ipv6]:port
        return host if "]:" in host else f"{host}:{DEFAULT_ETCD_PORT}"
    return host if ":" in host else f"{host}:{DEFAULT_ETCD_PORT}"


def split_address(address: str) -> tuple[str, int]:
    """`host:port` -> (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def service_prefix(key: str) -> str:
    """The key prefix under which the instances of `key` are registered."""
    return key.rstrip("/") + "/"


def registration_key(key: str, lease_id: int) -> str:
    """go-zero's key for one instance: `<key>/<lease id in decimal>`."""
    return f"{service_prefix(key)}{lease_id}"


@dataclass(slots=True)
class EndpointTable:
    """The registered instances of one service, and a round-robin pick over them.

    Several keys may carry the same endpoint (an instance that re-registered before its
    old lease expired): it is listed, and picked, once.
    """

    entries: dict[str, str] = field(default_factory=dict)  # etcd key -> endpoint
    _endpoints: list[str] = field(default_factory=list)
    _next: int = 0

    def replace(self, entries: dict[str, str]) -> None:
        """Take a full listing (after a get)."""
        self.entries = {k: v for k, v in entries.items() if v}
        self._rebuild()

    def put(self, key: str, endpoint: str) -> None:
        if endpoint:
            self.entries[key] = endpoint
        else:
            self.entries.pop(key, None)
        self._rebuild()

    def delete(self, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            self._rebuild()

    def _rebuild(self) -> None:
        self._endpoints = sorted(set(self.entries.values()))

    @property
    def endpoints(self) -> list[str]:
        """Distinct live endpoints, sorted."""
        return list(self._endpoints)

    def pick(self) -> str | None:
        """The next endpoint in turn, None when there is none."""
        if not self._endpoints:
            return None
        self._next = (self._next + 1) % len(self._endpoints)
        return self._endpoints[self._next]


# ---------------------------------------------------------------- shared clients


@dataclass(slots=True)
class _Shared:
    client: Any
    users: int = 0


# grpc.aio channels belong to one event loop, so clients are shared per loop and address.
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Shared]] = (
    weakref.WeakKeyDictionary()
)


def acquire_client(address: str, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> Any:
    """The aetcd client for `address` in this event loop (created on first use); pair each
    call with `release_client`, which closes it when its last user is done."""
    import aetcd

    pool = _pools.setdefault(asyncio.get_running_loop(), {})
    shared = pool.get(address)
    if shared is None:
        host, port = split_address(address)
        shared = _Shared(aetcd.Client(host=host, port=port, timeout=timeout,
                                      options=dict(_CHANNEL_OPTIONS)))
        pool[address] = shared
    shared.users += 1
    return shared.client


def client_in_use(address: str) -> bool:
    """Whether this event loop already holds a client (a channel) for `address`."""
    pool = _pools.get(asyncio.get_running_loop(), {})
    return address in pool


async def first_call(call: Callable[[], Awaitable[None]], *, shared_channel: bool,
                     timeout: float) -> None:
    """Run the first etcd call of a registration or resolver.

    On a channel that other users already hold, a connection failure may be stale: after an
    etcd restart grpc keeps failing calls at once with the last connect error until its
    reconnect backoff (at most 2 s, see _CHANNEL_OPTIONS) runs out, although etcd is back.
    So there the call is retried until `timeout`. On a fresh channel the refusal was just
    observed, and it is the answer: fail at once.
    """
    from aetcd.exceptions import ConnectionFailedError

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await call()
            return
        except ConnectionFailedError:
            if not shared_channel or asyncio.get_running_loop().time() >= deadline:
                raise
        await asyncio.sleep(0.1)


async def release_client(address: str) -> None:
    """Give back a client from `acquire_client`."""
    pool = _pools.get(asyncio.get_running_loop(), {})
    shared = pool.get(address)
    if shared is None:
        return
    shared.users -= 1
    if shared.users <= 0:
        del pool[address]
        with contextlib.suppress(Exception):  # closing is best effort
            await shared.client.close()


# ---------------------------------------------------------------- registration


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
    ) -> None:
        """`etcd` is `host:port` or an etcd:// URL (its hosts are used, its key ignored)."""
        hosts = etcd.partition("://")[2] if "://" in etcd else etcd
        self.address = _with_port(hosts.split("/", 1)[0].split(",")[0].strip())
        self.key = key.strip("/")
        self.value = value
        self.ttl = max(1, int(ttl))
        self._call_timeout = call_timeout
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
        shared = client_in_use(self.address)
        self._client = acquire_client(self.address, timeout=self._call_timeout)
        try:
            await first_call(self._register, shared_channel=shared, timeout=self._call_timeout)
        except Exception as e:
            await release_client(self.address)
            self._client = None
            raise DiscoveryError(f"etcd at {self.address} is not reachable: {_why(e)}") from e
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
                                self.address, self.key, _why(e))
                self._failing = True
                continue
            if self._failing:
                log.info("etcd %s reachable again; %s registered", self.address, self.key)
                self._failing = False

    async def stop(self) -> None:
        """Stop refreshing and revoke the lease (the key disappears). Never raises."""
        task, self._task = self._task, None
        await _cancelled(task)
        if self._client is None:
            return
        lease_id, self._lease_id = self._lease_id, None
        if lease_id is not None:
            try:
                await self._client.revoke_lease(lease_id)
            except Exception as e:  # the lease still expires after its TTL
                log.info("could not revoke etcd lease of %s (%s); it expires in %ds",
                         self.key, _why(e), self._granted_ttl)
        await release_client(self.address)
        self._client = None

    async def __aenter__(self) -> EtcdRegistration:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ---------------------------------------------------------------- resolution


class EtcdResolver:
    """The live endpoints of one service key, kept current by a watch.

    `start()` lists `<key>/` (DiscoveryError if etcd is unreachable) and starts a task that
    watches the prefix from the listed revision + 1. aetcd's watch does not survive an etcd
    restart, so after any error the task lists again and watches anew; listing (not just
    resuming from the last revision) also covers compaction and an etcd that lost its data.
    While etcd is down the last known endpoints keep being served.
    """

    def __init__(self, target: EtcdTarget, *, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self.target = target
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
        return self._task is not None

    async def start(self) -> EtcdResolver:
        """List the endpoints and start watching; safe to call concurrently and again."""
        async with self._lock:
            if self._task is not None:
                return self
            shared = client_in_use(self.target.address)
            self._client = acquire_client(self.target.address, timeout=self._call_timeout)
            try:
                await first_call(self._load, shared_channel=shared, timeout=self._call_timeout)
            except Exception as e:
                self._client = None
                await release_client(self.target.address)
                raise DiscoveryError(
                    f"etcd at {self.target.address} is not reachable: {_why(e)}"
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
                                self.target.url(), _why(e), self.table.endpoints)
            fresh = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def stop(self) -> None:
        """Stop watching and give back the client. Never raises."""
        task, self._task = self._task, None
        await _cancelled(task)
        if self._client is not None:
            self._client = None
            await release_client(self.target.address)


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait for it to end, whatever it raised."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _why(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
