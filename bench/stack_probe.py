"""Hostile clients against one HTTP-stack variant: `python -m bench.stack_probe API`.

API: own, uvicorn, granian-asgi or granian-rsgi (bench/stack_server.py). Prints what a
64 MiB request header, 200 pipelined GET /query of a 1 MiB msg never read, and
`Expect: 100-continue` with a 17 MiB Content-Length do to it (RSS from /proc, ping times).
SQLite in a temp directory, 127.0.0.1 only, every loop bounded.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests
import yaml

from bench.procs import free_port, workdir

MIB = 1 << 20


def main(api: str) -> None:
    wd = workdir()
    port = free_port()
    conf = {"Store": {"Driver": "sqlite", "Db": str(wd / "d.db")}, "HttpPort": port,
            "GrpcPort": free_port(), "Host": "127.0.0.1", "LogLevel": "warn"}
    (wd / "c.yml").write_text(yaml.safe_dump(conf))
    with open(wd / "log", "wb") as log:
        p = subprocess.Popen([sys.executable, "-m", "bench.stack_server", str(wd / "c.yml"),
                              "--api", api], cwd=Path(__file__).resolve().parent.parent,
                             stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def rss_mb() -> int:
        with open(f"/proc/{p.pid}/status") as f:
            return next(int(ln.split()[1]) // 1024 for ln in f if ln.startswith("VmRSS"))

    try:
        for _ in range(100):
            try:
                if requests.get(f"{base}/api/dtmsvr/version", timeout=0.5).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        before = rss_mb()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /api/dtmsvr/newGid HTTP/1.1\r\nHost: x\r\nX-Big: ")
            sent = 0
            try:
                while sent < 64 * MIB:
                    s.sendall(b"a" * MIB)
                    sent += MIB
            except OSError as e:
                print(f"header: sending stopped after {sent // MIB} MiB: {e}")
            s.settimeout(5)
            try:
                print("header: answer", s.recv(200)[:60])
            except OSError as e:
                print("header: no answer:", e)
        print(f"header: RSS {before} -> {rss_mb()} MB")

        gid = "probe-" + uuid.uuid4().hex[:8]
        r = requests.post(f"{base}/api/dtmsvr/prepare", timeout=30, json={
            "gid": gid, "trans_type": "msg", "steps": [{"action": "http://127.0.0.1:9/x"}],
            "payloads": ["x" * MIB], "query_prepared": "http://127.0.0.1:9/q"})
        print("prepare", r.status_code)
        before = peak = rss_mb()
        pings = []
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(b"GET /api/dtmsvr/query?gid=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                      % gid.encode() * 200)
            for _ in range(30):
                t = time.perf_counter()
                requests.get(f"{base}/api/ping", timeout=5)
                pings.append((time.perf_counter() - t) * 1000)
                peak = max(peak, rss_mb())
                time.sleep(0.1)
        print(f"pipelined: RSS {before} MB, peak {peak} MB; slowest ping {max(pings):.1f} ms")

        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(3)
            s.sendall(b"POST /api/dtmsvr/submit HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                      b"Expect: 100-continue\r\n\r\n" % (17 * MIB))
            try:
                print("expect: first bytes", s.recv(120))
            except OSError as e:
                print("expect: no answer:", e)
    finally:
        p.terminate()
        p.wait(10)


if __name__ == "__main__":
    main(sys.argv[1])
