"""Service discovery through etcd, compatible with go-zero (and so with DTM's gozero driver).

Layout in etcd: each instance of service `<key>` is the key `<key>/<lease id in decimal>`
with its `host:port` as value, attached to a lease it keeps alive; readers list and watch
the prefix `<key>/`. URLs name the etcd endpoint(s) and the key:
`etcd://127.0.0.1:2379/dtmservice` (several hosts may be comma-separated; the first is used).

Register a service (server or SDK side)::

    reg = await register("etcd://127.0.0.1:2379/user.rpc", "127.0.0.1:9001", ttl=10)
    ...
    await reg.stop()            # revokes the lease: the key disappears

`register` raises DiscoveryError at once if etcd is unreachable; once
started, the registration survives etcd going away and coming back (it re-registers with a
new lease when the old one is gone). The dtmx server calls `register_from_settings(settings)`
when `MicroService.Target` is an etcd:// URL: key from the URL, value `MicroService.EndPoint`.

Resolve a service::

    addr = await resolve_target("etcd://127.0.0.1:2379/dtmservice")   # -> "host:port"
    addr = await resolve_target("127.0.0.1:36790")                     # unchanged

`resolve_target` is a drop-in `resolver` for `dtmx.invoke.grpc.GrpcInvoker` (whose branch
URLs `etcd://host:2379/<key>/pkg.Service/Method` pass `etcd://host:2379/<key>` as target).
Per event loop it keeps one `EtcdResolver` per target (list, then watch; round-robin over
the live endpoints; cached endpoints keep serving while etcd is down) and one etcd client
per etcd address, shared with registrations. `await close_all()` stops them at shutdown.
For explicit lifetimes use `Discovery()` (its `resolve` is the same function) or
`EtcdResolver` / `EtcdRegistration` from `dtmx.discovery_etcd` directly.

Nothing here imports server modules or aetcd at import time (aetcd is imported on first use).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

from dtmx.discovery_etcd import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_TTL,
    DiscoveryError,
    EndpointTable,
    EtcdRegistration,
    EtcdResolver,
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
    "EtcdRegistration",
    "EtcdResolver",
    "EtcdTarget",
    "close_all",
    "is_etcd_url",
    "parse_etcd_url",
    "register",
    "register_from_settings",
    "registration_key",
    "resolve_target",
]


def is_etcd_url(target: str) -> bool:
    """True for `etcd://...` targets."""
    return target[:7].lower() == "etcd://"


async def register(
    url: str, endpoint: str, *, ttl: int = DEFAULT_TTL, call_timeout: float = DEFAULT_CALL_TIMEOUT
) -> EtcdRegistration:
    """Register `endpoint` under the key of `url` (etcd://host:2379/key) and keep it alive.

    Raises DiscoveryError if etcd does not answer within `call_timeout`.
    """
    target = parse_etcd_url(url)
    reg = EtcdRegistration(target.address, target.key, endpoint, ttl=ttl,
                           call_timeout=call_timeout)
    return await reg.start()


async def register_from_settings(settings: Settings) -> EtcdRegistration:
    """The server's own registration: `MicroService.Target` key = `MicroService.EndPoint`.

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
        return await register(ms.Target, ms.EndPoint)
    except DiscoveryError as e:
        raise ConfigError(e.message) from None


class Discovery:
    """Resolvers per etcd target, created on first use; `resolve` fits GrpcInvoker."""

    def __init__(self, *, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self._call_timeout = call_timeout
        self._resolvers: dict[str, EtcdResolver] = {}

    def resolver(self, target: str) -> EtcdResolver:
        """The (possibly not yet started) resolver of an etcd:// target."""
        r = self._resolvers.get(target)
        if r is None:
            r = EtcdResolver(parse_etcd_url(target), call_timeout=self._call_timeout)
            self._resolvers[target] = r
        return r

    async def resolve(self, target: str) -> str:
        """`etcd://host:2379/key` -> a live `host:port` (round-robin); others unchanged."""
        if not is_etcd_url(target):
            return target
        return await self.resolver(target).pick()

    async def stop(self) -> None:
        """Stop every watch and release the etcd clients."""
        resolvers, self._resolvers = list(self._resolvers.values()), {}
        for r in resolvers:
            await r.stop()


# One Discovery per event loop, for the module-level functions (grpc.aio and aetcd
# channels cannot be shared across loops).
_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Discovery] = (
    weakref.WeakKeyDictionary()
)


def _default() -> Discovery:
    loop = asyncio.get_running_loop()
    d = _defaults.get(loop)
    if d is None:
        d = _defaults[loop] = Discovery()
    return d


async def resolve_target(target: str) -> str:
    """Resolve an etcd:// target to a live `host:port`; pass any other target through.

    Raises DiscoveryError when etcd cannot be reached on first use of a target, or when no
    endpoint is registered.
    """
    if not is_etcd_url(target):
        return target
    return await _default().resolve(target)


async def close_all() -> None:
    """Stop the watches started by `resolve_target` in this event loop."""
    d = _defaults.pop(asyncio.get_running_loop(), None)
    if d is not None:
        await d.stop()
