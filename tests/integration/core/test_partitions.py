"""Two servers on a 3-master Redis Cluster divide the store's partitions; one is killed with
kill -9 in the middle of a stream of sagas; the other takes its partitions over when their
leases end and finishes everything, each branch applied once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import requests

from dtmx.net.resp import RedisAddress
from dtmx.net.resp_cluster import ClusterClient
from tests.support.busi import BusiServer
from tests.support.redis_cluster import RedisCluster
from tests.support.sagas import OK_STEPS, assert_applied_exactly_once, body, unfinished
from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.util import eventually, free_port

PARTITIONS = 16


def _lease_pids(url: str, base: str) -> list[int]:
    """The pid in the lease owner of each partition (0: nobody holds it)."""

    async def read() -> list[int]:
        c = ClusterClient(RedisAddress.from_url(url))
        try:
            keys = [f"{{{base}:{p}}}:lease" for p in range(PARTITIONS)]
            owners = await asyncio.gather(*(c.execute("HGET", k, "owner", key=k) for k in keys))
        finally:
            await c.close()
        return [int(o.decode().split(":")[1]) if o else 0 for o in owners]

    return asyncio.run(read())


def test_two_servers_divide_partitions_and_one_takes_over(
        redis_cluster: RedisCluster, cleanup: contextlib.ExitStack) -> None:
    busi = cleanup.enter_context(BusiServer(free_port()))
    busi.state.set("TransOut", "SLEEP:0.3")
    block = cleanup.enter_context(scratch_store("redis-cluster", "dtmx_pt", "", redis_cluster.url))
    block["RedisPartitions"] = PARTITIONS
    base = block["RedisPrefix"].strip("{}")
    fast = {"RequestTimeout": 1, "LeaseSeconds": 1}
    a, b = (cleanup.enter_context(ServerProcess(store=block, extra=fast)) for _ in range(2))
    pid_a, pid_b = a.proc.pid, b.proc.pid  # type: ignore[union-attr]

    def divided() -> bool:
        pids = _lease_pids(redis_cluster.url, base)
        return pids.count(pid_a) == pids.count(pid_b) == PARTITIONS // 2

    eventually(divided, timeout=20, interval=0.1)
    acked: list[tuple[str, bool]] = []
    for i in range(40):
        gid = f"pt-{i}-{uuid.uuid4().hex[:8]}"
        r = requests.post(f"{a.url}/submit", json=body(gid, busi.url, OK_STEPS), timeout=5)
        assert r.status_code == 200, r.text
        acked.append((gid, True))
    a.kill()  # kill -9 while its sagas wait in TransOut
    assert unfinished(busi.state, acked)
    eventually(lambda: all(b.status(g) == "succeed" for g, _ in acked), timeout=60,
               interval=0.2)
    assert _lease_pids(redis_cluster.url, base) == [pid_b] * PARTITIONS
    assert_applied_exactly_once(busi.state, acked)
