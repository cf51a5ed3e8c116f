"""The store goes away under load and comes back (issue 3): the server keeps running, says it
is unhealthy, answers 503 instead of acknowledging, and loses nothing it acknowledged.

Uses a Redis of its own (append-only file, fsync always) on a free port, so stopping it does
not disturb anything else on the machine.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.busi import BusiServer
from tests.support.server import ServerProcess
from tests.support.util import eventually, free_port


class OwnRedis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.dir), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually(self.ping, timeout=20)

    def ping(self) -> bool:
        r = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                           text=True)
        return r.stdout.strip() == "PONG"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run scripts/services.sh")
    r = OwnRedis(tmp_path)
    r.start()
    yield r
    if r.proc and r.proc.poll() is None:
        r.kill()


def test_redis_stops_and_returns_under_load(redis: OwnRedis,
                                           cleanup: contextlib.ExitStack) -> None:
    busi = cleanup.enter_context(BusiServer(free_port()))
    store = {"Driver": "redis", "Host": "127.0.0.1", "Port": redis.port, "RedisPrefix": "{o}"}
    server = cleanup.enter_context(
        ServerProcess(store=store, extra={"RequestTimeout": 0.5, "LeaseSeconds": 1}))
    health = f"http://127.0.0.1:{server.http_port}/api/health"
    acked: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set() and len(acked) + len(refused) < 5000:
            gid = f"out-{uuid.uuid4().hex[:12]}"
            steps = [{"action": f"{busi.url}/TransOut", "compensate": f"{busi.url}/TransOutRevert"},
                     {"action": f"{busi.url}/TransIn", "compensate": f"{busi.url}/TransInRevert"}]
            try:
                r = requests.post(f"{server.url}/submit", timeout=3, json={
                    "gid": gid, "trans_type": "saga", "steps": steps, "payloads": ["{}", "{}"]})
            except requests.RequestException:
                continue
            if r.status_code == 200:
                acked.append(gid)
            else:
                refused.append(r.status_code)
                stop.wait(0.02)

    t = threading.Thread(target=stream)
    t.start()
    try:
        eventually(lambda: len(acked) >= 30, timeout=30)
        redis.kill()
        eventually(lambda: requests.get(health, timeout=3).status_code == 503, timeout=20)
        eventually(lambda: len(refused) >= 3, timeout=20)
        assert server.proc is not None and server.proc.poll() is None  # still running
        n = len(acked)
        redis.start()
        eventually(lambda: requests.get(health, timeout=3).status_code == 200, timeout=20)
        eventually(lambda: len(acked) >= n + 30, timeout=30)
    finally:
        stop.set()
        t.join(30)
    assert set(refused) == {503}  # refused while down: a clear "unavailable", never a 500
    eventually(lambda: all(server.status(g) == "succeed" for g in acked), timeout=60,
               interval=0.2)
    for gid in acked:
        assert busi.state.applied_count("TransOut", gid) == 1, gid
        assert busi.state.applied_count("TransIn", gid) == 1, gid
