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
    """`masters` redis-servers in cluster mode; `url` names the first (any one will do).

    `password` sets requirepass (and masterauth) on every node; `tls` = (CA, certificate,
    key) makes every node and the cluster bus speak TLS only.
    """

    def __init__(self, masters: int = 3, password: str = "",
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dtmx-rcluster-"))
        self.ports: list[int] = []
        self.masters = masters
        self.password = password
        self.tls = tls

    @property
    def url(self) -> str:
        return f"redis{'s' if self.tls else ''}://127.0.0.1:{self.ports[0]}/0"

    def _server_args(self, port: int) -> list[str]:
        args = ["--port", str(port)]
        if self.tls:
            ca, cert, key = self.tls
            args = ["--port", "0", "--tls-port", str(port), "--tls-cluster", "yes",
                    "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                    "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        return args

    def _cli_args(self) -> list[str]:
        args: list[str] = []
        if self.tls:
            args += ["--tls", "--cacert", str(self.tls[0])]
        if self.password:
            args += ["-a", self.password, "--no-auth-warning"]
        return args

    def start(self) -> RedisCluster:
        """Start the nodes and join them (everything started is stopped if this fails)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RedisCluster:
        for _ in range(self.masters):
            port = _free_pair()
            d = self.root / str(port)
            d.mkdir()
            subprocess.run(
                ["redis-server", *self._server_args(port), "--bind", "127.0.0.1",
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
            ["redis-cli", *self._cli_args(), "--cluster", "create",
             *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )
        for port in self.ports:
            self._wait(lambda p=port: "cluster_state:ok" in self._cli(p, "cluster", "info"))
        return self

    def _cli(self, port: int, *args: str) -> str:
        r = subprocess.run(["redis-cli", *self._cli_args(), "-p", str(port), *args],
                           capture_output=True, text=True, timeout=10)
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
