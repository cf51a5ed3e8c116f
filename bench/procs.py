"""Processes and stores of a benchmark run: start, stop, CPU time, clean store state."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
import yaml

STORES = ("sqlite", "mysql", "postgres", "redis")
# Our own names so nothing of the other helpers' is touched.
MYSQL_DB = "bench_dtmx"
PG_SCHEMA = "bench_dtmx"
REDIS_PREFIX = "{bench}"
DBOS_DB = "bench_dbos"
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


#: The database server's processes, by their /proc comm, per store (PostgreSQL forks one
#: process per connection; MariaDB and Redis are one process: the bench's redis-server,
#: and any other redis-server on the machine such as a test Redis Cluster's).
_STORE_SERVER_COMM = {"postgres": ("postgres",), "mysql": ("mariadbd", "mysqld"),
                      "redis": ("redis-server",)}


def store_server_cpus(store: str) -> dict[int, float]:
    """utime + stime of each of the database server's processes, by pid (none for SQLite).
    Every process of that server: other clients' work counts too."""
    names = _STORE_SERVER_COMM.get(store)
    if not names:
        return {}
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "comm").read_text().strip() in names:
                out[int(d.name)] = cpu_seconds(int(d.name))
        except OSError:  # ended meanwhile
            continue
    return out


def store_server_cpu(store: str) -> float:
    """utime + stime of the database server's processes (0.0 for SQLite).

    Counts every process of that server, so work of other clients of the same server in
    the window is included: a shared machine makes this an upper bound."""
    return sum(store_server_cpus(store).values())


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def store_block(store: str, workdir: Path) -> dict[str, Any]:
    """The YAML `Store` block of dtmx for one of our bench stores."""
    if store == "sqlite":
        return {"Driver": "sqlite", "Db": str(workdir / "dtmx.db")}
    if store == "mysql":
        return {"Driver": "mysql", "Host": "127.0.0.1", "Port": 3306, "User": "root",
                "Password": "", "Db": MYSQL_DB}
    if store == "postgres":
        return {"Driver": "postgres", "Host": "127.0.0.1", "Port": 5432, "User": "postgres",
                "Db": "postgres", "Schema": PG_SCHEMA}
    if store == "redis":
        return {"Driver": "redis", "Host": "127.0.0.1", "Port": 6379,
                "RedisPrefix": REDIS_PREFIX}
    raise ValueError(f"unknown store {store}")


def reset_store(store: str) -> None:
    """Drop what earlier bench runs left (only our own database / schema / prefix)."""
    if store == "mysql":
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{MYSQL_DB}`")
        finally:
            conn.close()
    elif store == "postgres":
        import psycopg

        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE')
    elif store == "redis":
        import redis

        r = redis.Redis(host="127.0.0.1", port=6379)
        # the meta keys carry the tag {bench}, the partitions {bench:<p>}: both go, or every
        # run leaves its transactions behind and later runs measure a Redis of millions of keys
        base = REDIS_PREFIX[1:-1]
        try:
            for match in (f"{{{base}}}*", f"{{{base}:*"):
                batch = list(r.scan_iter(match=match, count=1000))
                for i in range(0, len(batch), 500):
                    r.unlink(*batch[i : i + 500])
        finally:
            r.close()


def server_conf(store: str, workdir: Path, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "Store": store_block(store, workdir),
        "HttpPort": free_port(),
        "GrpcPort": free_port(),
        "Host": "127.0.0.1",
        "LogLevel": "warn",
    }
    conf.update(extra)
    return conf


class Proc:
    """A child process we started, with its log file; stopped by its own pid only."""

    def __init__(self, argv: list[str], workdir: Path, name: str,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                                     env={**os.environ, **(env or {})})
        log.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(url, timeout=0.5).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        tail = self.log_path.read_text()[-2000:]
        raise RuntimeError(f"{self.name} not up after {timeout}s: {tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class DtmxServer(Proc):
    """`python -m dtmx serve -c conf.yml` on free ports."""

    def __init__(self, conf: dict[str, Any], workdir: Path, name: str = "dtmx") -> None:
        self.conf = conf
        path = workdir / f"{name}.yml"
        path.write_text(yaml.safe_dump(conf))
        super().__init__([sys.executable, "-m", "dtmx", "serve", "-c", str(path)], workdir, name)
        self.wait_http(f"{self.url}/version")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.conf['HttpPort']}/api/dtmsvr"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.conf['GrpcPort']}"


class Branches(Proc):
    """The branch handler process (bench.branches)."""

    def __init__(self, workdir: Path, grpc: bool = False) -> None:
        self.port = free_port()
        self.grpc_port = free_port() if grpc else 0
        argv = [sys.executable, "-m", "bench.branches", "--port", str(self.port)]
        if grpc:
            argv += ["--grpc-port", str(self.grpc_port)]
        super().__init__(argv, workdir, "branches", env={"PYTHONPATH": _root()})
        self.wait_http(f"{self.base}/stats")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def _root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="dtmx-bench-"))


def pg_backend_pids(dbs: Sequence[str]) -> list[int]:
    """The PostgreSQL server processes serving connections to the databases `dbs`."""
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres",
                         autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)",
                            [list(dbs)]).fetchall()
    return [int(r[0]) for r in rows]


def pg_backends_cpu(dbs: Sequence[str]) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving the databases `dbs` (only
    those: other clients of the shared server do not count)."""
    out = {}
    for pid in pg_backend_pids(dbs):
        try:
            out[pid] = cpu_seconds(pid)
        except OSError:  # its connection closed meanwhile
            continue
    return out


#: pg_stat_database counters summed by `pg_db_stats`.
PG_DB_STATS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")
#: What `pg_db_stats` answers.
PG_COUNTS = (*PG_DB_STATS, "xids")


def pg_db_stats(dbs: Sequence[str]) -> dict[str, int]:
    """PG_DB_STATS summed over the databases `dbs`, and `xids`: the server's next
    transaction id (only a writing transaction takes one; all databases count). A backend
    reports its counts when it goes idle, at most once a second, and when it exits: read
    them after the clients closed their connections."""
    import psycopg

    cols = ", ".join(f"coalesce(sum({c}), 0)" for c in PG_DB_STATS)
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres",
                         autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(f"SELECT {cols} FROM pg_stat_database WHERE datname = ANY(%s)",
                           [list(dbs)]).fetchone()
        xid = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())").fetchone()
    assert row is not None and xid is not None
    out = {c: int(v) for c, v in zip(PG_DB_STATS, row, strict=True)}
    out["xids"] = int(xid[0])  # the server's next transaction id: all its databases
    return out
