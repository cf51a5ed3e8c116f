"""Run a real `dtmx serve` process for tests, on free ports, with short intervals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.support.util import eventually, free_port

# Short intervals so nothing waits out DTM's 35 s / 10 s defaults.
FAST = {
    "TransCronInterval": 0.05,
    "RetryInterval": 0.2,
    "TimeoutToFail": 1,
    "RequestTimeout": 2,
    "LeaseSeconds": 5,
}


class ServerProcess:
    """A `python -m dtmx serve` subprocess. `store` is the YAML `Store` block."""

    def __init__(
        self,
        store: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
        token: str = "",
        python: str = sys.executable,
    ) -> None:
        #: the interpreter that runs `-m dtmx serve` (another venv's, to test an install)
        self.python = python
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="dtmx-test-"))
        self.http_port = free_port()
        self.grpc_port = free_port()
        conf: dict[str, Any] = dict(FAST)
        conf["Store"] = dict(store or {"Driver": "sqlite", "Db": str(self.workdir / "dtmx.db")})
        conf["HttpPort"] = self.http_port
        conf["GrpcPort"] = self.grpc_port
        conf.update(extra or {})
        self.conf = conf
        self.conf_path = self.workdir / "conf.yml"
        self.conf_path.write_text(yaml.safe_dump(conf))
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = dict(env or {})
        #: sent as `Authorization: Bearer` by query() when the server has Auth
        self.token = token
        tls = conf.get("Tls") or {}
        #: https when the server has a certificate, verified against the test CA
        self.scheme = "https" if tls.get("CertFile") else "http"
        self.verify: str | bool = True  # a test's CA file for a test-made certificate
        self.cert: tuple[str, str] | None = None  # the client certificate for mutual TLS

    @property
    def url(self) -> str:
        """Base URL DTM clients use, e.g. http://127.0.0.1:PORT/api/dtmsvr."""
        return f"{self.base}/api/dtmsvr"

    @property
    def base(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header of `token` (none without one)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.env)
        self.proc = subprocess.Popen(
            [self.python, "-m", "dtmx", "serve", "-c", str(self.conf_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                # ping: open even when the server requires API tokens
                return requests.get(f"{self.base}/api/ping", timeout=0.5, verify=self.verify,
                                    cert=self.cert).ok
            except requests.RequestException:
                return False

        try:
            eventually(up, timeout=timeout)
        except BaseException:
            self.kill()  # a server that never came up must not outlive the test
            raise
        return self

    def kill(self) -> None:
        """kill -9: no chance to clean up, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def query(self, gid: str) -> dict[str, Any]:
        r = requests.get(f"{self.url}/query", params={"gid": gid}, headers=self.headers,
                         timeout=5, verify=self.verify, cert=self.cert)
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def status(self, gid: str) -> str | None:
        t = self.query(gid).get("transaction")
        return t["status"] if t else None

    def wait_status(self, gid: str, status: str, timeout: float = 15.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            q = self.query(gid)
            t = q.get("transaction")
            return q if t and t["status"] == status else None

        try:
            found = eventually(check, timeout=timeout)
        except AssertionError:
            raise AssertionError(
                f"{gid} not {status} within {timeout}s: {self.query(gid)}"
            ) from None
        assert found is not None
        return found
