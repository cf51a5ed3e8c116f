"""Watching a running `dtmx serve` from a test: its resident memory (from /proc) and how
long `/api/ping` takes while something else keeps it busy."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.server import ServerProcess


def rss(server: ServerProcess) -> int:
    """Resident set size of the server process, bytes (VmRSS in /proc/<pid>/status)."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def ping_ms(server: ServerProcess) -> float:
    """How long one `GET /api/ping` takes, ms."""
    t0 = time.perf_counter()
    r = requests.get(f"{server.base}/api/ping", timeout=5)
    assert r.ok
    return (time.perf_counter() - t0) * 1000


def pings_while(server: ServerProcess, done: Callable[[], bool], limit: float = 20.0
                ) -> list[float]:
    """Ping every 50 ms until `done()` (at most `limit` seconds); the times in ms."""
    times = []
    deadline = time.monotonic() + limit
    while not done() and time.monotonic() < deadline:
        times.append(ping_ms(server))
        time.sleep(0.05)
    return times
