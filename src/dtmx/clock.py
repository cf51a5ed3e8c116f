"""Injected time and ids: the engine and poller take these instead of reading globals."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Protocol


class Clock(Protocol):
    """The time source the engine, poller and heartbeat read (injected; tests move it)."""

    def now(self) -> float:
        """Seconds since the epoch."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Seconds since the epoch, from the system clock."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of real time."""
        await asyncio.sleep(seconds)


_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(n: int) -> str:
    out = []
    while n:
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    return "".join(reversed(out)) or "0"


class GidFactory:
    """Unique, roughly time-ordered gids (22 characters), like DTM's short uuids."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def __call__(self) -> str:
        ms = int(self._clock.now() * 1000)
        rand = int.from_bytes(os.urandom(10), "big")
        return (_base62(ms).rjust(8, "0") + _base62(rand).rjust(14, "0"))[:22]
