"""The connect-time half of `BranchPolicy`: resolve a branch host, judge every address.

Branch clients (HTTP pool, aiohttp, gRPC channels) ask `AddressGuard.resolve` for the
addresses to connect to instead of resolving by themselves, and connect to the address they
got back, so what was judged is what is dialled (a name that resolves to 127.0.0.1 once and
169.254.169.254 the next time is caught the second time). A refusal is `PolicyDenied`, an
`OSError`, which the invokers already turn into an ERROR result like a refused connection.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from dtmx.core.branch_policy import BranchPolicy, literal_ip, split_host_port


class PolicyDenied(OSError):
    """A branch address refused by BranchPolicy."""


Resolver = Callable[[str], Awaitable[str]]


class AddressGuard:
    """Resolves branch hosts and refuses the addresses `policy` denies."""

    def __init__(self, policy: BranchPolicy) -> None:
        self.policy = policy

    async def resolve(self, host: str, port: int, *, url: str = "") -> list[str]:
        """The addresses of `host`, every one allowed; PolicyDenied naming the rule if one
        is not (a name with one bad address is refused whole)."""
        literal = literal_ip(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as e:
                raise OSError(f"cannot resolve {host}: {e.strerror}") from None
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for ip in addresses:
            v = self.policy.check_address(url or f"{host}:{port}", host, port, ip)
            if v is not None:
                raise PolicyDenied(v.message())
        return addresses

    def grpc_resolver(self, inner: Resolver) -> Resolver:
        """Wrap a gRPC target resolver (identity or etcd): the `host:port` it returns is
        judged and replaced by the allowed address, so the channel dials that address."""

        async def resolve(target: str) -> str:
            address = await inner(target)
            try:
                host, port = split_host_port(address)
            except ValueError as e:
                raise OSError(f"gRPC target: {e}") from None
            ip = (await self.resolve(host, port, url=target))[0]
            return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

        return resolve

    def aiohttp_resolver(self) -> Any:
        """An `aiohttp.abc.AbstractResolver` over `resolve` (aiohttp skips resolvers for
        address literals: `BranchClient` checks those itself)."""
        from aiohttp.abc import AbstractResolver, ResolveResult

        guard = self

        class _Resolver(AbstractResolver):
            async def resolve(self, host: str, port: int = 0,
                              family: int = socket.AF_UNSPEC) -> list[ResolveResult]:
                return [
                    ResolveResult(hostname=host, host=ip, port=port,
                                  family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                                  proto=0, flags=socket.AI_NUMERICHOST)
                    for ip in await guard.resolve(host, port)
                ]

            async def close(self) -> None:
                return None

        return _Resolver()

