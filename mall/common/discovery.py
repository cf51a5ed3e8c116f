"""Service discovery as an injected component: static addresses or etcd (go-zero's layout).

A service registers `<Key>/<lease id>` -> "host:port" under a lease it keeps alive, so its
entry vanishes soon after it dies; a client lists `<Key>/` and spreads calls round-robin over
the instances. `StaticDiscovery` (embedded mode) knows fixed addresses and registers nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Protocol

from mall.common.config import RpcClientConf

log = logging.getLogger("mall.discovery")

#: go-zero's default lease TTL for registrations (seconds).
DEFAULT_TTL = 10


class Registration(Protocol):
    """A live registration; `stop` withdraws it."""

    async def stop(self) -> None:
        """Withdraw the registration."""
        ...


class Discovery(Protocol):
    """Register this instance under a key; list the instances under a key."""

    async def register(self, key: str, address: str) -> Registration:
        """Announce `address` under `key` until the registration is stopped."""
        ...

    async def resolve(self, key: str) -> list[str]:
        """Every address registered under `key` (may be empty)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class _Nothing:
    async def stop(self) -> None:
        """Nothing was registered."""


class StaticDiscovery:
    """Fixed addresses per key (embedded mode)."""

    def __init__(self, addresses: Mapping[str, Sequence[str]] | None = None) -> None:
        self.addresses = {k: list(v) for k, v in (addresses or {}).items()}

    async def register(self, key: str, address: str) -> Registration:
        """Static mode has nobody to tell."""
        return _Nothing()

    async def resolve(self, key: str) -> list[str]:
        """The configured addresses."""
        return list(self.addresses.get(key, ()))

    async def close(self) -> None:
        """Nothing to release."""


class EtcdDiscovery:
    """etcd through `dtmx.discovery`: go-zero's layout, leases kept alive, watched listings.

    `Hosts` may name several etcd endpoints; dtmx.discovery dials the first.
    """

    def __init__(self, hosts: Sequence[str], *, ttl: int = DEFAULT_TTL) -> None:
        from dtmx.discovery import Discovery as Resolvers

        self._hosts = ",".join(hosts) or "127.0.0.1:2379"
        self._ttl = ttl
        self._resolvers = Resolvers()
        self._registrations: list[Registration] = []

    def url(self, key: str) -> str:
        """`etcd://<hosts>/<key>`."""
        return f"etcd://{self._hosts}/{key}"

    async def register(self, key: str, address: str) -> Registration:
        """Put `<key>/<lease id>` -> address under a lease kept alive in the background."""
        from dtmx.discovery import register

        reg = await register(self.url(key), address, ttl=self._ttl)
        self._registrations.append(reg)
        log.info("registered %s -> %s in etcd", key, address)
        return reg

    async def resolve(self, key: str) -> list[str]:
        """The live instances under `<key>/` (watched; the last known while etcd is away)."""
        resolver = self._resolvers.resolver(self.url(key))
        await resolver.start()
        return list(resolver.endpoints)

    async def close(self) -> None:
        """Withdraw registrations and stop watching."""
        regs, self._registrations = self._registrations, []
        for reg in regs:
            with contextlib.suppress(Exception):
                await reg.stop()
        await self._resolvers.stop()


def advertised(listen_on: str) -> str:
    """The address to announce for `ListenOn` (0.0.0.0 -> MALL_ADVERTISE_HOST or 127.0.0.1)."""
    host, _, port = listen_on.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = os.environ.get("MALL_ADVERTISE_HOST", "127.0.0.1")
    return f"{host}:{port}"


class NoInstance(Exception):
    """No address is known for a service."""


class Balancer:
    """Round-robin over the instances of one rpc service (`RpcClientConf`)."""

    def __init__(self, conf: RpcClientConf, discovery: Discovery | None = None) -> None:
        self.conf = conf
        self._owned = discovery is None
        if conf.Endpoints:
            self.key = "endpoints"
            self.discovery: Discovery = StaticDiscovery({self.key: conf.Endpoints})
            self._owned = True
        elif conf.Etcd is not None and conf.Etcd.Key:
            self.key = conf.Etcd.Key
            self.discovery = discovery or EtcdDiscovery(conf.Etcd.Hosts)
        else:
            raise ValueError("an rpc client needs Endpoints or Etcd {Hosts, Key}")
        self._counter = itertools.count()

    @property
    def etcd_target(self) -> str:
        """`etcd://host:port/key`, how go-zero names an etcd-discovered service."""
        if self.conf.Etcd is None:
            raise ValueError("not an etcd client")
        return f"etcd://{self.conf.Etcd.Hosts[0]}/{self.conf.Etcd.Key}"

    async def pick(self) -> str:
        """The next instance's address; raises NoInstance when none is registered."""
        addresses = await self.discovery.resolve(self.key)
        if not addresses:
            raise NoInstance(f"no instance of {self.key} is registered")
        return addresses[next(self._counter) % len(addresses)]

    async def close(self) -> None:
        """Close the discovery client if this balancer made it."""
        if self._owned:
            await self.discovery.close()
