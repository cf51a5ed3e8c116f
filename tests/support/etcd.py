"""Run a real single-node etcd for a test or a session, on free ports, in a temp dir.

    with EtcdProcess() as etcd:
        client = aetcd.Client(host=etcd.host, port=etcd.port)
        ...
        etcd.restart()   # same ports, same data dir: the data survives

The etcd binary comes from Debian's etcd-server package (scripts/services.sh installs it);
DTMX_TEST_ETCD_BIN overrides where it is.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.support.util import free_port

# Loopback requests must not go through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EtcdMissing(RuntimeError):
    """The etcd binary is not installed."""


def etcd_binary() -> str:
    """Path of the etcd binary, or EtcdMissing saying how to install it."""
    explicit = os.environ.get("DTMX_TEST_ETCD_BIN")
    found = explicit or shutil.which("etcd")
    if not found or not os.access(found, os.X_OK):
        raise EtcdMissing(
            f"etcd binary not found ({explicit or 'etcd on PATH'}): run `bash scripts/services.sh`"
            " (installs Debian's etcd-server and etcd-client) or set DTMX_TEST_ETCD_BIN"
        )
    return found


class EtcdProcess:
    """One etcd server process; `endpoint` is "127.0.0.1:PORT"."""

    def __init__(self, workdir: str | os.PathLike[str] | None = None) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="dtmx-etcd-"))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "etcd.log"
        self.host = "127.0.0.1"
        self.port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def endpoint(self) -> str:
        """host:port, as etcdctl --endpoints and aetcd want it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Client URL, http://127.0.0.1:PORT."""
        return f"http://{self.endpoint}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> EtcdProcess:
        """Start etcd (data dir kept across restarts) and wait until it reports healthy."""
        if self.running:
            return self
        if self._started:
            self._launch(timeout)
            return self
        # free_port() only finds a port that was free a moment ago: on a first start another
        # process may take it first, so pick new ports and try again. A restart keeps its ports.
        for attempt in range(3):
            try:
                self._launch(timeout)
                break
            except RuntimeError:
                if attempt == 2 or "address already in use" not in self.log_tail():
                    raise
                self.kill()
                self.log_path.unlink(missing_ok=True)
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.port, self.peer_port = free_port(), free_port()
        self._started = True
        return self

    def _launch(self, timeout: float) -> None:
        binary = etcd_binary()
        peer = f"http://{self.host}:{self.peer_port}"
        cmd = [
            binary,
            "--name", "dtmx-test",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"dtmx-test={peer}",
            # One member and loopback only: a short election timeout makes it leader in ~50 ms
            # instead of ~1 s, at every start and restart.
            "--heartbeat-interval", "20",
            "--election-timeout", "200",
        ]  # fmt: skip
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._wait_healthy(timeout)

    def _healthy(self) -> bool:
        try:
            with _NO_PROXY.open(f"{self.url}/health", timeout=1) as resp:
                return bool(json.load(resp).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        interval = 0.01
        while True:
            # Checked before and after: a port taken by another etcd would answer too.
            if not self.running:
                raise RuntimeError(f"etcd exited at start-up:\n{self.log_tail()}")
            if self._healthy() and self.running:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd not healthy within {timeout}s:\n{self.log_tail()}")
            time.sleep(interval)
            interval = min(interval * 2, 0.1)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it does not exit in time."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Abrupt stop (SIGKILL), as in a crash."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None

    def restart(self, timeout: float = 20.0) -> EtcdProcess:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop and remove the temp dir (when this object made it)."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EtcdProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
