"""Several servers on one store (issue 3): kill -9 one of three during a stream of sagas; the
others take its work over when the lease ends; every saga finishes, no branch is applied more
often than its results require, and no two servers ever work on one transaction at once."""

from __future__ import annotations

import contextlib
import itertools
import threading
import uuid

import pytest
import requests

from tests.support.busi import BusiServer
from tests.support.sagas import BAD_STEPS, OK_STEPS, assert_applied_exactly_once, body, unfinished
from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.services import STORES
from tests.support.util import eventually, free_port


@pytest.mark.parametrize("driver", [*STORES, "redis-cluster"])
def test_three_servers_one_killed(driver: str, tmp_path: object, request: pytest.FixtureRequest,
                                  cleanup: contextlib.ExitStack) -> None:
    """On Redis the servers divide the store's partitions between them (partition leases);
    the killed server's partitions are taken over when their leases end."""
    busi = cleanup.enter_context(BusiServer(free_port()))
    busi.state.set("TransOut", "SLEEP:0.2")
    busi.state.set("TransOutTry", "FAILURE")
    url = request.getfixturevalue("redis_cluster").url if driver == "redis-cluster" else ""
    block = cleanup.enter_context(scratch_store(driver, "dtmx_ms", str(tmp_path), url))
    fast = {"RequestTimeout": 0.5, "LeaseSeconds": 1}
    servers = [cleanup.enter_context(ServerProcess(store=block, extra=fast)) for _ in range(3)]
    acked: list[tuple[str, bool]] = []
    on_first: set[str] = set()  # acknowledged by the server that gets killed
    stop = threading.Event()

    def stream() -> None:
        for i in itertools.count():
            if stop.is_set() or i > 5000:
                return
            good = i % 5 != 0  # independent of the server choice (i % 3)
            gid = f"ms-{uuid.uuid4().hex[:12]}"
            target = servers[i % 3]
            try:
                r = requests.post(f"{target.url}/submit",
                                  json=body(gid, busi.url, OK_STEPS if good else BAD_STEPS),
                                  timeout=2)
            except requests.RequestException:
                continue  # the killed server: the client tries the next one
            if r.status_code == 200:
                acked.append((gid, good))
                if target is servers[0]:
                    on_first.add(gid)

    t = threading.Thread(target=stream)
    t.start()
    try:
        eventually(lambda: len(acked) >= 45, timeout=60)
        servers[0].kill()
        n = len(acked)
        # the killed server must leave acknowledged work unfinished for the others to take over
        assert unfinished(busi.state, [(g, good) for g, good in acked[:n] if g in on_first])
        eventually(lambda: len(acked) >= n + 30, timeout=60)
    finally:
        stop.set()
        t.join(30)
    survivor = servers[1]

    def all_final() -> bool:
        return all(survivor.status(g) == ("succeed" if good else "failed") for g, good in acked)

    eventually(all_final, timeout=90, interval=0.2)
    assert_applied_exactly_once(busi.state, acked)
