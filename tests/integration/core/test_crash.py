"""kill -9 the server during a stream of sagas: a restarted server finishes every one, and no
action or compensation is applied more (or less) often than its branch results require."""

from __future__ import annotations

import contextlib
import threading
import uuid

import requests

from tests.support.busi import BusiServer
from tests.support.sagas import BAD_STEPS, OK_STEPS, assert_applied_exactly_once, body, unfinished
from tests.support.server import ServerProcess
from tests.support.util import eventually, free_port


def test_kill_9_during_a_stream_of_sagas(cleanup: contextlib.ExitStack) -> None:
    busi = cleanup.enter_context(BusiServer(free_port()))
    busi.state.set("TransOut", "SLEEP:0.2")  # slow enough that the kill lands mid-saga
    busi.state.set("TransOutTry", "FAILURE")  # second step of a BAD saga always refuses
    server = cleanup.enter_context(ServerProcess(extra={"RequestTimeout": 0.5,
                                                        "LeaseSeconds": 1}))
    acked: list[tuple[str, bool]] = []
    attempted: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set() and i < 5000:
            i += 1
            good = i % 3 != 0
            gid = f"crash-{uuid.uuid4().hex[:12]}"
            attempted.append(gid)
            try:
                r = requests.post(f"{server.url}/submit",
                                  json=body(gid, busi.url, OK_STEPS if good else BAD_STEPS),
                                  timeout=2)
            except requests.RequestException:
                stop.wait(0.02)  # not acknowledged: the server is down; a client backs off
                continue
            if r.status_code == 200:
                acked.append((gid, good))

    t = threading.Thread(target=stream)
    t.start()
    try:
        eventually(lambda: len(acked) >= 40, timeout=30)
        server.kill()
        n_before = len(acked)
        # the kill must land with acknowledged sagas unfinished, or this tests nothing
        assert unfinished(busi.state, acked[:n_before])
        server.start()
        eventually(lambda: len(acked) >= n_before + 20, timeout=30)
    finally:
        stop.set()
        t.join(30)

    def all_final() -> bool:
        return all(server.status(g) == ("succeed" if good else "failed") for g, good in acked)

    eventually(all_final, timeout=60, interval=0.2)
    assert_applied_exactly_once(busi.state, acked)
    # a request the server stored but could not answer before dying is finished too
    acked_gids = {g for g, _ in acked}
    for gid in attempted:
        if gid not in acked_gids and server.query(gid)["transaction"] is not None:
            eventually(lambda g=gid: server.status(g) in ("succeed", "failed"), timeout=30)


def test_graceful_stop_hands_work_back_at_once(cleanup: contextlib.ExitStack) -> None:
    """SIGTERM mid-saga: the server releases its lease, so a restart resumes at once
    instead of after LeaseSeconds (30 s here)."""
    busi = cleanup.enter_context(BusiServer(free_port()))
    busi.state.set("TransIn", "SLEEP:1")
    server = cleanup.enter_context(ServerProcess(extra={"LeaseSeconds": 30,
                                                        "RequestTimeout": 3}))
    gid = f"stop-{uuid.uuid4().hex[:12]}"
    r = requests.post(f"{server.url}/submit", json=body(gid, busi.url, OK_STEPS), timeout=5)
    assert r.status_code == 200
    eventually(lambda: busi.state.count("TransIn", gid) == 1)  # in flight
    server.stop()  # SIGTERM
    server.start()
    server.wait_status(gid, "succeed", timeout=15)  # well before the 30 s lease
    assert busi.state.applied_count("TransIn", gid) == 1
    assert busi.state.applied_count("TransOut", gid) == 1
