"""A Redis Cluster of our own on loopback: 3 masters (no replicas) on free ports, each
redis-server in its own folder, joined with `redis-cli --cluster create`; gone at stop.

Debian's redis-server (installed by scripts/services.sh) is enough; nothing is persisted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _free_pair() -> int:
    """A port P with P and P + 10000 (the cluster bus) both free."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a redis cluster node")


class RedisCluster:
    """`masters` redis-servers in cluster mode; `url` names the first (any one will do)."""

    def __init__(self, masters: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dtmx-rcluster-"))
        self.ports: list[int] = []
        self.masters = masters

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> RedisCluster:
        for _ in range(self.masters):
            port = _free_pair()
            d = self.root / str(port)
            d.mkdir()
            subprocess.run(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--save", "", "--appendonly", "no", "--daemonize", "yes",
                 "--pidfile", str(d / "redis.pid"), "--dir", str(d),
                 "--logfile", str(d / "redis.log")],
                check=True, capture_output=True, cwd=d,
            )
            self.ports.append(port)
        for port in self.ports:
            self._wait(lambda p=port: self._cli(p, "ping") == "PONG")
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )
        for port in self.ports:
            self._wait(lambda p=port: "cluster_state:ok" in self._cli(p, "cluster", "info"))
        return self

    @staticmethod
    def _cli(port: int, *args: str) -> str:
        r = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip()

    @staticmethod
    def _wait(check: object, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster did not come up")
            time.sleep(0.05)

    def slot_owners(self) -> list[int]:
        """The port of the master of each of the 16384 slots (asked now)."""
        owners = [0] * 16384
        for line in self._cli(self.ports[0], "cluster", "nodes").splitlines():
            f = line.split()
            if "master" not in f[2]:
                continue
            port = int(f[1].split(":")[1].split("@")[0])
            for rng in f[8:]:
                lo, _, hi = rng.partition("-")
                if lo.isdigit():
                    for slot in range(int(lo), int(hi or lo) + 1):
                        owners[slot] = port
        return owners

    def master_of_key(self, key: str) -> int:
        """The port of the master that holds `key`'s slot."""
        slot = int(self._cli(self.ports[0], "cluster", "keyslot", key))
        return self.slot_owners()[slot]

    def dbsize(self, port: int) -> int:
        return int(self._cli(port, "dbsize"))

    def stop(self) -> None:
        for pidfile in self.root.glob("*/redis.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
