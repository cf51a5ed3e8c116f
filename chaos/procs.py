"""The processes of a run: the store under test, the `dtmx serve` servers, the bank.

Everything is started on free loopback ports in the run's own directory and stopped by the
pid we started; the store's data lives under names of our own (`dtmx_chaos`, a private
redis-server), so a run needs no lock shared with other tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml

STORES = ("sqlite", "mysql", "postgres", "redis")
DB_NAME = "dtmx_chaos"
PG_SCHEMA = "chaos"
REDIS_PREFIX = "{chaos}"
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str) -> None:
    """Poll `check()` until true; raise naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not up within {timeout:g}s")


def socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the loopback TCP socket from `local_port` to `remote_port`."""
    # fields: sl local_address rem_address ...; ports are 4 hex digits after the colon
    needle = f":{local_port:04X} "
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            text = Path(table).read_text()
        except OSError:
            continue
        start = text.find(needle)
        while start != -1:
            line = text[text.rfind("\n", 0, start) + 1:text.find("\n", start)]
            f = line.split()
            if (len(f) > 9 and int(f[1].rsplit(":", 1)[1], 16) == local_port
                    and int(f[2].rsplit(":", 1)[1], 16) == remote_port):
                return f[9]
            start = text.find(needle, start + 1)
    return None


def holds_socket(pid: int, inode: str) -> bool:
    """Whether process `pid` has the socket `inode` open."""
    target = f"socket:[{inode}]"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


class Proc:
    """A child process with its log file in the run directory."""

    def __init__(self, argv: list[str], workdir: Path, name: str) -> None:
        self.argv = argv
        self.workdir = workdir
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            # the chaos package is run from its checkout, whatever the run directory
            path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.workdir, env=env)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log_tail(self, n: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


class StoreUnderTest:
    """The store: where it really listens, and its `Store` block for a given port."""

    def __init__(self, kind: str, workdir: Path) -> None:
        if kind not in STORES:
            raise ValueError(f"unknown store {kind!r}; one of {', '.join(STORES)}")
        self.kind = kind
        self.workdir = workdir
        self.redis: Proc | None = None
        self.port = {"mysql": 3306, "postgres": 5432, "redis": 0, "sqlite": 0}[kind]

    @property
    def proxied(self) -> bool:
        """SQLite is a file: no connection to fault, so server kills only."""
        return self.kind != "sqlite"

    def start(self) -> None:
        if self.kind == "redis":
            self.port = free_port()
            self.start_redis()
        elif self.kind == "mysql":
            import pymysql

            conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
            try:
                with conn.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS `{DB_NAME}`")
            finally:
                conn.close()
        elif self.kind == "postgres":
            import psycopg

            with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres",
                                 autocommit=True) as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                    (DB_NAME,)).fetchone():
                    conn.execute(f'CREATE DATABASE "{DB_NAME}"')
            with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB_NAME}",
                                 autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE')

    def start_redis(self) -> None:
        """The private redis-server, durable like a production one (every write fsynced to
        the append-only file), so a kill -9 of it loses nothing acknowledged."""
        self.redis = Proc(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                           "--dir", str(self.workdir)], self.workdir, "redis").start()
        wait_until(lambda: _connects(self.port), 10, "private redis-server")

    def kill_redis(self) -> None:
        """kill -9 the private redis-server (the start of a store restart)."""
        if self.redis is not None:
            self.redis.kill9()

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()

    def block(self, port: int) -> dict[str, Any]:
        """The YAML `Store` block pointing at `port` (the proxy's, or the store's own)."""
        if self.kind == "sqlite":
            return {"Driver": "sqlite", "Db": str(self.workdir / "dtmx.db")}
        if self.kind == "mysql":
            return {"Driver": "mysql", "Host": "127.0.0.1", "Port": port, "User": "root",
                    "Password": "", "Db": DB_NAME}
        if self.kind == "postgres":
            return {"Driver": "postgres", "Host": "127.0.0.1", "Port": port,
                    "User": "postgres", "Db": DB_NAME, "Schema": PG_SCHEMA}
        return {"Driver": "redis", "Host": "127.0.0.1", "Port": port,
                "RedisPrefix": REDIS_PREFIX}


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def held_port() -> socket.socket:
    """A loopback port kept bound (SO_REUSEPORT, never listening) for the whole run.

    A killed server's port is free until its restart, and another process on the machine
    (another test's server, picking a free port) could take it: the workload's clients would
    then submit to a foreign server on another store. Held this way, the kernel hands the
    port to nobody else, while our server, started with --reuse-port, can still listen on it.
    """
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    return s


class DtmxServer:
    """One `dtmx serve` (or, for the server whose clock moves, `python -m chaos.skewed`)."""

    def __init__(self, index: int, workdir: Path, conf: dict[str, Any], *,
                 skewed: bool) -> None:
        self.index = index
        self.held = [held_port(), held_port()]
        self.http_port = int(self.held[0].getsockname()[1])
        conf = {**conf, "HttpPort": self.http_port,
                "GrpcPort": int(self.held[1].getsockname()[1]), "Host": "127.0.0.1"}
        self.conf_path = workdir / f"server{index}.yml"
        self.conf_path.write_text(yaml.safe_dump(conf))
        self.skew_path = workdir / f"server{index}.skew"
        self.skew_path.write_text("0")
        if skewed:
            argv = [sys.executable, "-m", "chaos.skewed", str(self.conf_path),
                    str(self.skew_path)]
        else:
            argv = [sys.executable, "-m", "dtmx", "serve", "--reuse-port", "-c",
                    str(self.conf_path)]
        self.proc = Proc(argv, workdir, f"server{index}")
        self.skewed = skewed
        self.pids: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/dtmsvr"

    def release_ports(self) -> None:
        """Let the held ports go (at the end of the run)."""
        for s in self.held:
            s.close()

    def start(self, wait: bool = True) -> None:
        self.proc.start()
        self.pids.append(self.proc.pid)
        if wait:
            self.wait_up()

    def wait_up(self, timeout: float = 30.0) -> None:
        def up() -> bool:
            if not self.proc.alive():
                raise RuntimeError(f"server{self.index} exited: {self.proc.log_tail()}")
            try:
                return requests.get(f"http://127.0.0.1:{self.http_port}/api/ping",
                                    timeout=0.5).ok
            except requests.RequestException:
                return False

        wait_until(up, timeout, f"server{self.index}")
