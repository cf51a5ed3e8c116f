"""Closed-loop load: N asyncio clients, each with one transaction in flight at a time.

A phase runs the clients for a warm-up, then measures a window: transactions whose
completion falls inside the window count, the CPU time of the given processes is read at
its edges, and latency is completion minus start (monotonic, comparable across processes).
Each transaction has a time limit, and the phase ends by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench.procs import self_cpu

TX_TIMEOUT = 15.0
#: One transaction: client index -> monotonic completion time (start is taken outside).
OneTx = Callable[[int], Awaitable[float]]


@dataclass
class PhaseResult:
    tps: float
    count: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    cpu_ms_per_tx: float | None  # of the processes passed in (the server side)
    store_cpu_ms_per_tx: float | None  # of the database server's processes (not SQLite)
    roundtrips_per_tx: float | None  # the served store's round trips, under this load
    client_cpu_ms_per_tx: float | None
    window_s: float
    first_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def run_phase(
    one: OneTx,
    *,
    clients: int,
    seconds: float,
    warmup: float,
    cpu_of: Callable[[], float] | None = None,
    store_cpu_of: Callable[[], float] | None = None,
    roundtrips_of: Callable[[], float] | None = None,
) -> PhaseResult:
    stop = False
    lats: list[tuple[float, float]] = []  # (done, latency)
    errors = 0
    first_error = ""

    async def client(i: int) -> None:
        nonlocal errors, first_error
        while not stop:
            t0 = time.monotonic()
            try:
                done = await asyncio.wait_for(one(i), TX_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                errors += 1
                first_error = first_error or f"{type(e).__name__}: {e}"
                await asyncio.sleep(0.05)  # a failing target must not spin
                continue
            lats.append((done, done - t0))

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    try:
        await asyncio.sleep(warmup)
        d0 = store_cpu_of() if store_cpu_of else 0.0
        r0 = roundtrips_of() if roundtrips_of else 0.0
        w0, c0, s0, e0 = time.monotonic(), cpu_of() if cpu_of else 0.0, self_cpu(), errors
        await asyncio.sleep(seconds)
        w1, c1, s1, e1 = time.monotonic(), cpu_of() if cpu_of else 0.0, self_cpu(), errors
        d1 = store_cpu_of() if store_cpu_of else 0.0
        r1 = roundtrips_of() if roundtrips_of else 0.0
        stop = True
        _, pending = await asyncio.wait(tasks, timeout=TX_TIMEOUT + 2)
        for t in pending:
            t.cancel()
    finally:
        stop = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    inside = [lat for done, lat in lats if w0 <= done <= w1]
    n = len(inside)
    window = w1 - w0
    return PhaseResult(
        tps=n / window,
        count=n,
        errors=e1 - e0,
        p50_ms=_ms(pct(inside, 0.5)),
        p99_ms=_ms(pct(inside, 0.99)),
        cpu_ms_per_tx=(c1 - c0) * 1000 / n if n and cpu_of else None,
        store_cpu_ms_per_tx=(d1 - d0) * 1000 / n if n and store_cpu_of else None,
        roundtrips_per_tx=(r1 - r0) / n if n and roundtrips_of else None,
        client_cpu_ms_per_tx=(s1 - s0) * 1000 / n if n else None,
        window_s=window,
        first_error=first_error,
        extra={"total": len(lats)},
    )


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 3)


class Waiter:
    """Learns of completions from the branch process by long poll; gid -> completion time."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self._s = session
        self._base = base
        self._futs: dict[str, asyncio.Future[float]] = {}
        self._early: dict[str, float] = {}
        self._after = 0
        self._task: asyncio.Task[None] | None = None
        self.completed: list[str] = []

    async def __aenter__(self) -> Waiter:
        async with self._s.post(f"{self._base}/reset") as r:
            r.raise_for_status()
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def expect(self, gid: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if gid in self._early:
            fut.set_result(self._early.pop(gid))
        else:
            self._futs[gid] = fut
        return fut

    def forget(self, gid: str) -> None:
        self._futs.pop(gid, None)

    async def _loop(self) -> None:
        while True:
            try:
                async with self._s.get(f"{self._base}/done",
                                       params={"after": self._after, "timeout": 1}) as r:
                    items = orjson.loads(await r.read())
            except (aiohttp.ClientError, OSError):
                await asyncio.sleep(0.05)
                continue
            self._after += len(items)
            for gid, t in items:
                self.completed.append(gid)
                fut = self._futs.pop(gid, None)
                if fut is None:
                    self._early[gid] = t
                elif not fut.done():
                    fut.set_result(t)


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None
