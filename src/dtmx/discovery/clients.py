"""The etcd clients of discovery, shared by address, and what every etcd user needs.

An `EtcdClients` is made by its owner (a `Discovery`, or a lone registration or resolver)
and handed to the registrations and resolvers that should share channels: nothing here is
global. A grpc.aio channel belongs to the event loop it was made in, so an `EtcdClients`
is used in one loop. aetcd is imported on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dtmx.discovery.target import DEFAULT_CALL_TIMEOUT, split_address

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


@dataclass(slots=True)
class _Shared:
    client: Any
    users: int = 0


class EtcdClients:
    """aetcd clients by etcd address, each closed when its last user gives it back."""

    def __init__(self) -> None:
        self._by_address: dict[str, _Shared] = {}

    def acquire(self, address: str, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> Any:
        """The client for `address` (created on first use); pair with `release`."""
        import aetcd

        shared = self._by_address.get(address)
        if shared is None:
            host, port = split_address(address)
            shared = _Shared(aetcd.Client(host=host, port=port, timeout=timeout,
                                          options=dict(_CHANNEL_OPTIONS)))
            self._by_address[address] = shared
        shared.users += 1
        return shared.client

    def in_use(self, address: str) -> bool:
        """Whether a client (a channel) for `address` is already held."""
        return address in self._by_address

    async def release(self, address: str) -> None:
        """Give back a client from `acquire`."""
        shared = self._by_address.get(address)
        if shared is None:
            return
        shared.users -= 1
        if shared.users <= 0:
            del self._by_address[address]
            with contextlib.suppress(Exception):  # closing is best effort
                await shared.client.close()


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


async def cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait for it to end, whatever it raised."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def why(e: BaseException) -> str:
    """An exception as a short log text: its type and message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
