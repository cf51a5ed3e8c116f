"""A clock the test moves by hand: DTM's 35 s timeouts pass in no time."""

from __future__ import annotations

import asyncio


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        # time only moves when the test says so; yield so other tasks run
        await asyncio.sleep(0)
