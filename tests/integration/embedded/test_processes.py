"""Real application processes on one store: one killed with kill -9 mid-saga, the other
finishing its acknowledged transactions, each effect once; a `dtmx serve` on the same store
seeing them, never failing them, and refusing local:// branches of its own clients."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import pytest
import requests

from dtmx.settings import Settings
from dtmx.store_settings import StoreSettings
from dtmx.stores import make_store
from tests.support.server import ServerProcess
from tests.support.util import eventually

ROOT = Path(__file__).resolve().parents[3]


class App:
    """A `tests.support.embedded_app` process; its ACK lines are collected as they come."""

    def __init__(self, store: StoreSettings, app_db: Path, *args: str) -> None:
        cmd = [sys.executable, "-m", "tests.support.embedded_app", "--store-url", store.Url,
               "--schema", store.Schema, "--prefix", store.RedisPrefix,
               "--app-db", str(app_db), *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.acked: list[str] = []
        self.ready = threading.Event()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, out: IO[str]) -> None:
        for line in out:
            if line.startswith("READY"):
                self.ready.set()
            elif line.startswith("ACK "):
                self.acked.append(line.split()[1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def apps() -> Iterator[list[App]]:
    started: list[App] = []
    yield started
    for a in started:
        a.kill()


def effects(app_db: Path) -> dict[tuple[str, str], int]:
    with sqlite3.connect(app_db, timeout=10) as conn:
        rows = conn.execute("SELECT gid, step, COUNT(*) FROM effects GROUP BY gid, step")
        return {(g, s): n for g, s, n in rows}


def server_store(store: StoreSettings) -> dict[str, Any]:
    return {"Url": store.Url, "Schema": store.Schema, "RedisPrefix": store.RedisPrefix}


def stored(store: StoreSettings, gids: list[str]) -> dict[str, str]:
    """The stored status of each gid, read from the store itself (a reader that does not
    poll: on Redis it holds no partitions)."""

    async def read() -> dict[str, str]:
        st = make_store(Settings(Store=replace(store, MaxOpenConns=2)))
        await st.open()
        try:
            return {g: (t.status.value if (t := await st.get(gid=g)) else "") for g in gids}
        finally:
            await st.close()

    return asyncio.run(read())


def all_succeed(store: StoreSettings, gids: list[str]) -> bool:
    return set(stored(store, gids).values()) == {"succeed"}


def query(server: ServerProcess, gid: str) -> dict[str, Any]:
    r = requests.get(f"{server.url}/query", params={"gid": gid}, timeout=5)
    r.raise_for_status()
    out: dict[str, Any] = r.json()
    return out


def test_kill_9_one_app_the_other_finishes(store: StoreSettings, tmp_path: Path,
                                           apps: list[App]) -> None:
    app_db = tmp_path / "app.db"
    b = App(store, app_db, "--lease", "2")
    apps.append(b)
    assert b.ready.wait(20)
    a = App(store, app_db, "--submit", "8", "--slow", "0.3", "--lease", "2")
    apps.append(a)
    eventually(lambda: len(a.acked) >= 4, timeout=20)
    a.kill()  # mid-saga: its last ones are between step1 and step2, or inside step2
    acked = list(a.acked)
    # b takes each over once a's lease ran out
    eventually(lambda: all_succeed(store, acked), timeout=20, interval=0.2)
    done = effects(app_db)
    for gid in acked:
        assert done.get((gid, "step1")) == 1 and done.get((gid, "step2")) == 1, gid


def test_serve_sees_and_never_fails_embedded_work(store: StoreSettings, tmp_path: Path,
                                                  apps: list[App]) -> None:
    app_db = tmp_path / "app.db"
    server = ServerProcess(store=server_store(store), extra={"LeaseSeconds": 1})
    server.start()
    try:
        # a served client cannot submit a local branch to a server that has none
        r = requests.post(f"{server.url}/submit", timeout=5, json={
            "gid": "embed-refused", "trans_type": "saga", "payloads": ["{}"],
            "steps": [{"action": "local://step1", "compensate": ""}]})
        assert r.status_code == 400 and "local" in r.text

        a = App(store, app_db, "--submit", "3", "--slow", "30", "--lease", "1")
        apps.append(a)
        eventually(lambda: len(a.acked) == 3, timeout=20)
        a.kill()  # all three stuck in step2
        # the server claims them (lease over, polling every 50 ms) for a few seconds:
        # each time it hands them back, untouched
        gid = a.acked[0]
        eventually(lambda: query(server, gid)["transaction"]["status"] == "submitted", 5)
        stop = threading.Event()
        stop.wait(1)
        for g in a.acked:
            q = query(server, g)
            assert q["transaction"]["status"] == "submitted", q
            assert {br["status"] for br in q["branches"]} <= {"prepared", "succeed"}, q
        # an application process with the functions adopts them, the server still running
        b = App(store, app_db, "--lease", "1")
        apps.append(b)
        for g in a.acked:
            eventually(lambda g=g: query(server, g)["transaction"]["status"] == "succeed",
                       timeout=20)
    finally:
        server.stop()
    done = effects(app_db)
    assert all(done.get((g, s)) == 1 for g in a.acked for s in ("step1", "step2")), done
