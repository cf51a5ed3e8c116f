"""The `dtmx` command as an operator meets it: bad config and unreachable stores exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from tests.support.server import ServerProcess
from tests.support.util import free_port


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dtmx", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def test_version() -> None:
    r = run("version")
    assert r.returncode == 0 and r.stdout.startswith("dtmx ")


def test_invalid_config_exits_2(tmp_path: Path) -> None:
    conf = tmp_path / "c.yml"
    conf.write_text("Store:\n  Driver: oracle\n")
    r = run("serve", "-c", str(conf))
    assert r.returncode == 2 and "Store.Driver" in r.stderr
    conf.write_text("HttpPort: lots\n")
    r = run("serve", "-c", str(conf))
    assert r.returncode == 2 and "HttpPort" in r.stderr
    r = run("serve", "-c", str(tmp_path / "missing.yml"))
    assert r.returncode == 2 and "cannot read" in r.stderr
    conf.write_text("Store:\n  Url: mysql://dtm:s3cret@db:abc/dtm\n")
    r = run("serve", "-c", str(conf))
    assert r.returncode == 2 and "Store.Url: the port must be a number" in r.stderr
    assert "Traceback" not in r.stderr and "s3cret" not in r.stderr
    conf.write_text("Limits:\n  MaxBranches: 0\n")
    r = run("serve", "-c", str(conf))
    assert r.returncode == 2 and "Limits.MaxBranches must be in 1..100000" in r.stderr


def test_unreachable_store_exits_2(tmp_path: Path) -> None:
    conf = tmp_path / "c.yml"
    conf.write_text(f"Store:\n  Driver: mysql\n  Host: 127.0.0.1\n  Port: {free_port()}\n"
                    f"HttpPort: {free_port()}\nGrpcPort: {free_port()}\n")
    r = run("serve", "-c", str(conf))
    assert r.returncode == 2 and "store unavailable" in r.stderr


def test_unknown_keys_warn_and_dtm_keys_load(tmp_path: Path) -> None:
    s = ServerProcess(extra={"UpdateBranchSync": 1, "Bogus": 3, "LogLevel": "info"},
                      workdir=str(tmp_path)).start()
    try:
        assert requests.get(f"{s.url}/version", timeout=5).ok
    finally:
        s.stop()
    log = s.log()
    assert "unknown config key Bogus" in log and "UpdateBranchSync" not in log


def test_migrate_sqlite(tmp_path: Path) -> None:
    conf = tmp_path / "c.yml"
    conf.write_text(f"Store:\n  Driver: sqlite\n  Db: {tmp_path / 'm.db'}\n")
    r = run("migrate", "-c", str(conf))
    assert r.returncode == 0, r.stderr
    r = run("migrate", "-c", str(conf))
    assert r.returncode == 0 and "nothing to apply" in r.stdout


def test_workers_share_the_ports(tmp_path: Path) -> None:
    """`dtmx serve --workers 2`: two server processes behind one HTTP and one gRPC port."""
    import os
    import re
    import signal
    import uuid

    from tests.support.busi import BusiServer
    from tests.support.util import eventually

    http, grpc_port = free_port(), free_port()
    conf = tmp_path / "c.yml"
    conf.write_text(f"Store:\n  Driver: sqlite\n  Db: {tmp_path / 'w.db'}\nHttpPort: {http}\n"
                    f"GrpcPort: {grpc_port}\nTransCronInterval: 0.05\nRetryInterval: 0.2\n")
    proc = subprocess.Popen([sys.executable, "-m", "dtmx", "serve", "-c", str(conf),
                             "--workers", "2"], cwd=tmp_path)
    busi = BusiServer(free_port()).start()
    url = f"http://127.0.0.1:{http}/api/dtmsvr"
    try:
        def children() -> list[int]:
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)],
                                 capture_output=True, text=True).stdout.split()
            return [int(p) for p in out]

        eventually(lambda: len(children()) == 2, timeout=20)

        def up() -> bool:
            try:
                return requests.get(f"{url}/version", timeout=1).ok
            except requests.RequestException:
                return False

        eventually(up, timeout=20)

        def listeners() -> set[int]:
            out = subprocess.run(["ss", "-Htlnp", f"sport = :{http}"], capture_output=True,
                                 text=True).stdout
            return {int(p) for p in re.findall(r"pid=(\d+)", out)}

        eventually(lambda: listeners() == set(children()), timeout=20)  # both are serving
        gids = [f"w-{uuid.uuid4().hex}" for _ in range(20)]
        for gid in gids:
            r = requests.post(f"{url}/submit", timeout=10, json={
                "gid": gid, "trans_type": "saga", "payloads": ["{}"],
                "steps": [{"action": f"{busi.url}/TransIn", "compensate": ""}]})
            assert r.status_code == 200, r.text

        def done() -> bool:
            return all(requests.get(f"{url}/query", params={"gid": g}, timeout=5).json()
                       ["transaction"]["status"] == "succeed" for g in gids)

        eventually(done, timeout=30)
        assert all(busi.state.applied_count("TransIn", g) == 1 for g in gids)
        # the owner token names the process that ran it: the kernel spread work over both
        owners = {requests.get(f"{url}/query", params={"gid": g}, timeout=5).json()
                  ["transaction"]["owner"].split(":")[1] for g in gids}
        assert owners == {str(p) for p in children()}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
        busi.stop()


def test_finished_transactions_expire(tmp_path: Path) -> None:
    """Store.FinishedDataExpire applies on every store (DTM: Redis only); here SQLite."""
    import uuid

    from tests.support.util import eventually

    s = ServerProcess(extra={"Store": {"Driver": "sqlite", "Db": str(tmp_path / "x.db"),
                                       "FinishedDataExpire": 1}}, workdir=str(tmp_path)).start()
    try:
        gid = f"exp-{uuid.uuid4().hex}"
        body = {"gid": gid, "trans_type": "saga", "steps": [{"action": "", "compensate": ""}],
                "payloads": [""], "wait_result": True}
        assert requests.post(f"{s.url}/submit", json=body, timeout=5).status_code == 200
        prepared = f"{gid}-p"
        requests.post(f"{s.url}/prepare", json={"gid": prepared, "trans_type": "tcc",
                                                "timeout_to_fail": 3600}, timeout=5)
        assert s.status(gid) == "succeed"
        eventually(lambda: s.query(gid)["transaction"] is None, timeout=15)
        assert s.status(prepared) == "prepared"  # unfinished work is never expired
    finally:
        s.stop()
