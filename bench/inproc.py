"""Measurements that need the dtmx engine or store inside the bench process.

- `count_roundtrips`: the store's own `roundtrips` counter per transaction, read from a dtmx
  server run in-process (the served process does not export the counter yet).
- `store_floor`: the store's commit rate for the same writes a 2-step saga makes (create,
  then one compare-and-set update per action), with the same concurrency, no HTTP at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from bench.load import TX_TIMEOUT, PhaseResult, pct, run_phase
from bench.procs import self_cpu

ROUNDTRIP_SAMPLE = 40


async def count_roundtrips(conf: dict[str, Any], workdir: Path,
                           make_one: Callable[[str, str], Any]) -> float:
    """Run ROUNDTRIP_SAMPLE transactions through an in-process server; round trips per tx.

    `make_one(http_url, grpc_target)` returns an async callable doing one transaction and
    returning when it is complete. The poller and the heartbeat are slowed down so they add
    nothing (each writes once, at start).
    """
    from dtmx.server import Server
    from dtmx.settings import load

    conf = {**conf, "TransCronInterval": 3600, "HeartbeatInterval": 3600, "LogLevel": "warn"}
    path = workdir / "inproc.yml"
    path.write_text(yaml.safe_dump(conf))
    server = Server(load(str(path)))
    await server.start()
    try:
        assert server.store is not None and server.service is not None
        one: Callable[[int], Awaitable[float]] = make_one(
            f"http://127.0.0.1:{conf['HttpPort']}/api/dtmsvr", f"127.0.0.1:{conf['GrpcPort']}"
        )
        for i in range(3):  # warm up: connections, prepared statements, the poller's claim
            await asyncio.wait_for(one(i), TX_TIMEOUT)
        await _idle(server)
        before = server.store.roundtrips
        for i in range(ROUNDTRIP_SAMPLE):
            await asyncio.wait_for(one(i), TX_TIMEOUT)
        await _idle(server)
        return (server.store.roundtrips - before) / ROUNDTRIP_SAMPLE
    finally:
        await server.stop()


async def _idle(server: Any, timeout: float = 10.0) -> None:
    """Wait until the in-process server has no background runs (the final writes)."""
    end = time.monotonic() + timeout
    engine = server.service.engine
    while engine.runs_in_flight and time.monotonic() < end:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.02)


async def store_floor(conf: dict[str, Any], *, clients: int, seconds: float,
                      warmup: float) -> tuple[PhaseResult, float]:
    """Sagas/s the store sustains doing only a 2-step saga's writes; and round trips each."""
    from dtmx.core.models import BranchUpdate, Change, Op, Status, Transaction, TransType
    from dtmx.core.saga import gen_branches
    from dtmx.settings import Settings
    from dtmx.store_settings import StoreSettings
    from dtmx.stores import make_store

    st = StoreSettings(**conf["Store"])
    store = make_store(Settings(Store=st))
    await store.open()
    steps = [{"action": "http://127.0.0.1:1/a1", "compensate": "http://127.0.0.1:1/c1"},
             {"action": "http://127.0.0.1:1/a2", "compensate": "http://127.0.0.1:1/c2"}]
    payloads = [b'{"amount":30}', b'{"amount":30}']
    seq = [0]

    async def one(i: int) -> float:
        seq[0] += 1
        gid = f"floor-{i}-{seq[0]}-{time.monotonic_ns()}"
        now = time.time()
        owner = f"bench:{i}"
        t = Transaction(gid=gid, trans_type=TransType.SAGA, status=Status.SUBMITTED,
                        create_time=now, update_time=now, owner=owner,
                        next_cron_interval=10.0, next_cron_time=now + 30)
        await store.create(trans=t, branches=gen_branches(gid, steps, payloads, now))
        b1 = (BranchUpdate("01", Op.ACTION, Status.SUCCEED),)
        b2 = (BranchUpdate("02", Op.ACTION, Status.SUCCEED),)
        ok1 = await store.update(gid=gid, now=now, expect_status=Status.SUBMITTED,
                                 expect_owner=owner,
                                 change=Change(branches=b1, next_cron_time=now + 30))
        ok2 = await store.update(gid=gid, now=now, expect_status=Status.SUBMITTED,
                                 expect_owner=owner,
                                 change=Change(status=Status.SUCCEED, branches=b2))
        if not (ok1 and ok2):
            raise RuntimeError(f"floor update refused for {gid}")
        return time.monotonic()

    try:
        r0 = store.roundtrips
        res = await run_phase(one, clients=clients, seconds=seconds, warmup=warmup,
                              cpu_of=self_cpu)
        done = max(1, seq[0])
        return res, (store.roundtrips - r0) / done
    finally:
        await store.close()


__all__ = ["count_roundtrips", "pct", "store_floor"]
