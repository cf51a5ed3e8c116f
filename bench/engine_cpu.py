"""CPU per saga of the engine alone: admission, the run, the SQLite store; no network.

`python -m bench.engine_cpu` submits 2-step sagas through `Service` in process, 16 at a
time, to an invoker that answers SUCCESS at once, and prints the process CPU per saga.
What it isolates is the server's own code per transaction, without the HTTP traffic and
the other processes whose noise a shared machine adds to the served benchmark.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid

from dtmx.clock import GidFactory, SystemClock
from dtmx.core.models import Outcome, TransType
from dtmx.core.request import TransRequest
from dtmx.core.timing import Timing
from dtmx.engine import Engine
from dtmx.invoke.base import BranchCall, CallResult
from dtmx.service import Service
from dtmx.stores.sql.sqlite import SqliteStore

ROUNDS, CONCURRENT, WARMUP = 200, 16, 200


class _Succeed:
    async def call(self, call: BranchCall) -> CallResult:
        await asyncio.sleep(0)
        return CallResult(Outcome.SUCCESS)

    async def close(self) -> None:
        pass


async def main() -> float:
    store = SqliteStore(os.path.join(tempfile.mkdtemp(prefix="dtmx-engine-cpu-"), "e.db"))
    await store.open()
    clock = SystemClock()
    engine = Engine(store=store, invoker=_Succeed(), clock=clock, timing=Timing())
    svc = Service(engine=engine, new_gid=GidFactory(clock))
    steps = [{"action": "http://x/a", "compensate": "http://x/c"}] * 2

    async def saga() -> None:
        await svc.submit(TransRequest(gid=uuid.uuid4().hex, trans_type=TransType.SAGA,
                                      steps=steps, payloads=[b"{}", b"{}"]))

    async def settle() -> None:
        while engine.runs_in_flight:
            await asyncio.sleep(0)

    try:
        for _ in range(WARMUP):
            await saga()
        await settle()
        t0 = time.process_time()
        for _ in range(ROUNDS):
            await asyncio.gather(*(saga() for _ in range(CONCURRENT)))
            await settle()
        return (time.process_time() - t0) / (ROUNDS * CONCURRENT)
    finally:
        await svc.close()
        await store.close()


if __name__ == "__main__":
    print(f"{asyncio.run(main()) * 1e6:.1f} us CPU per saga")
