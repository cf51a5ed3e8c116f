"""CPU-heavy work allowed at the DEFAULT limits (issue 10), against a real `dtmx serve` on
SQLite: while a saga of Limits.MaxBranches (1,000) steps runs to the end, and while a msg
whose topics fan out to Limits.MaxTopicFanout (10,000) branch rows is submitted and runs,
`/api/ping` keeps answering within 100 ms and the server's RSS (from /proc) stays bounded."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import requests

from tests.integration.core.conftest import post
from tests.support.probe import ping_ms, rss
from tests.support.server import ServerProcess
from tests.support.util import eventually, free_port

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def busi_url() -> Iterator[str]:
    """The busi app in a process of its own: answering thousands of calls in this process
    would slow the pings measured here, not the server."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.busi", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/busi"


        def up() -> bool:
            try:
                return requests.post(f"{url}/TransIn", json={}, timeout=1).ok
            except requests.ConnectionError:
                return False

        eventually(up)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(workdir=str(tmp_path_factory.mktemp("dtmx"))).start()  # SQLite
    yield s
    s.stop()


@dataclass
class Watch:
    """Pings and RSS samples taken every 50 ms while a transaction runs."""

    pings: list[float] = field(default_factory=list)
    peak_rss: int = 0
    seconds: float = 0.0


def status(server: ServerProcess, gid: str) -> str | None:
    """The transaction's status, read without its branches (a /query of 10,000 branches
    20 times a second would be the heaviest load on the server)."""
    r = requests.get(f"{server.url}/all", params={"gid": gid}, timeout=5)
    assert r.ok, r.text
    found = r.json()["transactions"]
    return found[0]["status"] if found else None


def watch_until(server: ServerProcess, gid: str, want: str, limit: float = 20.0) -> Watch:
    """Sample until `gid` reaches status `want` (AssertionError after `limit` seconds)."""
    w = Watch()
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        w.pings.append(ping_ms(server))
        w.peak_rss = max(w.peak_rss, rss(server))
        if status(server, gid) == want:
            w.seconds = time.monotonic() - t0
            return w
        time.sleep(0.05)
    raise AssertionError(f"{gid} not {want} after {limit} s: {status(server, gid)}")


def test_a_saga_of_max_branches_steps(server: ServerProcess, busi_url: str) -> None:
    n = 1000  # the default Limits.MaxBranches
    gid = f"long-{uuid.uuid4().hex[:10]}"
    before = rss(server)
    r = post(server, "submit", {
        "gid": gid, "trans_type": "saga", "payloads": ['{"amount": 1}'] * n,
        "steps": [{"action": f"{busi_url}/TransIn", "compensate": f"{busi_url}/TransInRevert"}]
        * n})
    assert r.status_code == 200, r.text
    w = watch_until(server, gid, "succeed")
    q = server.query(gid)
    assert [b["status"] for b in q["branches"] if b["op"] == "action"] == ["succeed"] * n
    assert max(w.pings) < 100, sorted(w.pings)[-5:]
    assert w.peak_rss - before < 32 * MIB, (before, w.peak_rss)  # measured: +5 MiB
    print(f"{n} steps in {w.seconds:.1f} s, ping max {max(w.pings):.1f} ms of {len(w.pings)},"
          f" rss {before // MIB} -> {w.peak_rss // MIB} MiB")


def test_a_msg_fanning_out_to_max_topic_fanout_rows(server: ServerProcess,
                                                    busi_url: str) -> None:
    """Pings are taken while the submit (10,000 rows stored) is in flight and until the msg
    has called all 10,000 branches."""
    topic = f"wide-{uuid.uuid4().hex[:10]}"
    with requests.Session() as s:
        for i in range(1000):
            r = s.get(f"{server.url}/subscribe", timeout=10,
                      params={"topic": topic, "url": f"{busi_url}/TransIn?s={i}"})
            assert r.ok, r.text
    gid = f"wide-{uuid.uuid4().hex[:10]}"
    steps = [{"action": f"topic://{topic}"}] * 10  # 10 x 1,000 = the default 10,000 rows
    before = rss(server)
    with ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        submitted = pool.submit(post, server, "submit", {
            "gid": gid, "trans_type": "msg", "steps": steps,
            "payloads": ['{"amount": 1}'] * 10})
        submitting = Watch()
        while not submitted.done() and time.monotonic() - t0 < 10:
            submitting.pings.append(ping_ms(server))
            submitting.peak_rss = max(submitting.peak_rss, rss(server))
            time.sleep(0.05)
        r = submitted.result()
        submit_ms = (time.monotonic() - t0) * 1000
    assert r.status_code == 200, r.text
    w = watch_until(server, gid, "succeed", limit=25)
    q = server.query(gid)
    assert [b["status"] for b in q["branches"]] == ["succeed"] * 10_000
    pings = submitting.pings + w.pings
    assert max(pings) < 100, sorted(pings)[-5:]
    peak = max(submitting.peak_rss, w.peak_rss)
    assert peak - before < 32 * MIB, (before, peak)  # measured: +5 MiB
    print(f"submit {submit_ms:.0f} ms, 10,000 calls in {w.seconds:.1f} s, ping max"
          f" {max(pings):.1f} ms of {len(pings)}, rss {before // MIB} -> {peak // MIB} MiB")
