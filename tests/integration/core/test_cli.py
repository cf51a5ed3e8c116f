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
