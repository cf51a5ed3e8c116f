"""Service discovery through etcd, compatible with go-zero (and so with DTM's gozero driver).

Layout in etcd: each instance of service `<key>` is the key `<key>/<lease id in decimal>`
with its `host:port` as value, attached to a lease it keeps alive; readers list and watch
the prefix `<key>/`. URLs name the etcd endpoint(s) and the key:
`etcd://127.0.0.1:2379/dtmservice` (several hosts may be comma-separated; the first is used).

One `Discovery` object holds what a process uses: its resolvers (one per target: list,
then watch; round-robin over the live endpoints; cached endpoints keep serving while etcd
is down) and its registrations, sharing one etcd client per etcd address. Its owner makes
it in the event loop that uses it and stops it at shutdown; nothing is kept globally::

    discovery = Discovery()
    reg = await discovery.register("etcd://127.0.0.1:2379/user.rpc", "127.0.0.1:9001")
    addr = await discovery.resolve("etcd://127.0.0.1:2379/dtmservice")   # -> "host:port"
    addr = await discovery.resolve("127.0.0.1:36790")                     # unchanged
    await discovery.stop()      # stops the watches, revokes the leases (keys disappear)

`discovery.resolve` is a drop-in `resolver` for `dtmx.invoke.grpc.GrpcInvoker` (whose
branch URLs `etcd://host:2379/<key>/pkg.Service/Method` pass `etcd://host:2379/<key>` as
target). Registering raises DiscoveryError at once if etcd is unreachable; once started, a
registration survives etcd going away and coming back (it re-registers with a new lease
when the old one is gone). The dtmx server calls `register_from_settings` when
`MicroService.Target` is an etcd:// URL: key from the URL, value `MicroService.EndPoint`.
`register(url, endpoint)` makes a lone registration with its own client.

Nothing here imports server modules or aetcd at import time (aetcd is imported on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dtmx.discovery.clients import EtcdClients
from dtmx.discovery.registration import EtcdRegistration
from dtmx.discovery.resolver import EtcdResolver
from dtmx.discovery.target import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_TTL,
    DiscoveryError,
    EndpointTable,
    EtcdTarget,
    parse_etcd_url,
    registration_key,
)
from dtmx.errors import ConfigError

if TYPE_CHECKING:
    from dtmx.settings import Settings

__all__ = [
    "Discovery",
    "DiscoveryError",
    "EndpointTable",
    "EtcdClients",
    "EtcdRegistration",
    "EtcdResolver",
    "EtcdTarget",
    "is_etcd_url",
    "parse_etcd_url",
    "register",
    "register_from_settings",
    "registration_key",
]


def is_etcd_url(target: str) -> bool:
    """True for `etcd://...` targets."""
    return target[:7].lower() == "etcd://"


async def register(
    url: str, endpoint: str, *, ttl: int = DEFAULT_TTL, call_timeout: float = DEFAULT_CALL_TIMEOUT,
    clients: EtcdClients | None = None,
) -> EtcdRegistration:
    """Register `endpoint` under the key of `url` (etcd://host:2379/key) and keep it alive
    until its `stop()`; `clients` shares channels (default: a client of its own).

    Raises DiscoveryError if etcd does not answer within `call_timeout`.
    """
    target = parse_etcd_url(url)
    reg = EtcdRegistration(target.address, target.key, endpoint, ttl=ttl,
                           call_timeout=call_timeout, clients=clients)
    return await reg.start()


async def register_from_settings(settings: Settings, discovery: Discovery | None = None
                                 ) -> EtcdRegistration:
    """The server's own registration: `MicroService.Target` key = `MicroService.EndPoint`,
    held by `discovery` (stopped with it) when given.

    Raises ConfigError when the block is incomplete or etcd is not reachable.
    """
    ms = settings.MicroService
    try:
        parse_etcd_url(ms.Target)
    except DiscoveryError as e:
        raise ConfigError(f"MicroService.Target: {e.message}") from None
    if not ms.EndPoint:
        raise ConfigError("MicroService.EndPoint is required with an etcd:// Target "
                          "(the host:port clients should dial, e.g. 10.0.0.5:36790)")
    try:
        if discovery is not None:
            return await discovery.register(ms.Target, ms.EndPoint)
        return await register(ms.Target, ms.EndPoint)
    except DiscoveryError as e:
        raise ConfigError(e.message) from None


class Discovery:
    """A process's resolvers and registrations, sharing etcd clients; `resolve` fits
    GrpcInvoker. Use it in one event loop; `stop()` ends it all."""

    def __init__(self, *, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self._call_timeout = call_timeout
        self._clients = EtcdClients()
        self._resolvers: dict[str, EtcdResolver] = {}
        self._registrations: list[EtcdRegistration] = []

    def resolver(self, target: str) -> EtcdResolver:
        """The (possibly not yet started) resolver of an etcd:// target."""
        r = self._resolvers.get(target)
        if r is None:
            r = EtcdResolver(parse_etcd_url(target), call_timeout=self._call_timeout,
                             clients=self._clients)
            self._resolvers[target] = r
        return r

    async def resolve(self, target: str) -> str:
        """`etcd://host:2379/key` -> a live `host:port` (round-robin); others unchanged.

        Raises DiscoveryError when etcd cannot be reached on first use of a target, or when
        no endpoint is registered.
        """
        if not is_etcd_url(target):
            return target
        return await self.resolver(target).pick()

    async def register(self, url: str, endpoint: str, *, ttl: int = DEFAULT_TTL
                       ) -> EtcdRegistration:
        """`register` (see there), kept until `stop()` (or the registration's own stop)."""
        reg = await register(url, endpoint, ttl=ttl, call_timeout=self._call_timeout,
                             clients=self._clients)
        self._registrations.append(reg)
        return reg

    async def stop(self) -> None:
        """Stop every watch, revoke every registration, release the etcd clients."""
        resolvers, self._resolvers = list(self._resolvers.values()), {}
        registrations, self._registrations = self._registrations, []
        for r in resolvers:
            await r.stop()
        for reg in registrations:
            await reg.stop()
