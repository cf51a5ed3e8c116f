"""`python -m mall run [--full]`: dtmx and the three services as child processes.

Embedded mode (default) uses mall/etc/embedded/*.yaml: SQLite files under .run/mall, no
Redis, fixed addresses. `--full` uses mall/etc/*.yaml: MySQL/MariaDB, Redis and etcd
(started here too if `etcd` is installed and nothing listens on 127.0.0.1:2379). Each child
is started once the one before it listens; Ctrl-C (or any child dying) stops them all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Child:
    """One process to run and the address that tells it is up."""

    name: str
    argv: list[str]
    ready: tuple[str, int]


def _etcd_healthy(url: str = "http://127.0.0.1:2379/health") -> bool:
    # Listening is not enough: etcd answers only once it has elected itself leader.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1) as resp:
            return bool(json.load(resp).get("health") == "true")
    except (OSError, ValueError):
        return False


def _listening(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=0.3):
            return True
    except OSError:
        return False


def children(full: bool) -> list[Child]:
    """dtmx, user rpc, user-score rpc, user-api, in start order."""
    etc = ROOT / "mall" / "etc" / ("" if full else "embedded")
    py = sys.executable
    return [
        Child("dtmx", [py, "-m", "dtmx", "serve", "-c", str(etc / "dtmx.yaml")],
              ("127.0.0.1", 36790)),
        Child("user.rpc", [py, "-m", "mall.user", "-f", str(etc / "user.yaml")],
              ("127.0.0.1", 8080)),
        Child("score.rpc", [py, "-m", "mall.userscore", "-f", str(etc / "userscore.yaml")],
              ("127.0.0.1", 8096)),
        Child("user-api", [py, "-m", "mall.userapi", "-f", str(etc / "userapi-api.yaml")],
              ("127.0.0.1", 8888)),
    ]  # fmt: skip


USAGE = """
The mall is up ({mode}).
  dtmx       grpc 127.0.0.1:36790, http http://127.0.0.1:36789/api/dtmsvr
  user rpc   127.0.0.1:8080     score rpc  127.0.0.1:8096
  user-api   http://127.0.0.1:8888     metrics http://127.0.0.1:9081/metrics

Register a user (a saga: saveUser + saveUserScore), then log in and see the points:
  J='content-type: application/json'
  curl -s -XPOST localhost:8888/user/register -H "$J" -d '{{"name":"alice","gender":"female"}}'
  curl -s -XPOST localhost:8888/user/login -H "$J" -d '{{"name":"alice"}}'
  curl -s localhost:8888/user/info -H "Authorization: Bearer <the token>"
{budget}
Ctrl-C stops everything.
"""

BUDGET_EMBEDDED = """
The points budget is 30 (ScoreBudget in mall/etc/embedded/userscore.yaml): after alice,
bob and carol, the next registration is refused (422) and rolled back - no user, no points:
  for n in bob carol dave; do curl -s -XPOST localhost:8888/user/register -H "$J" \\
      -d "{\\"name\\":\\"$n\\",\\"gender\\":\\"male\\"}"; echo; done
  curl -s -XPOST localhost:8888/user/login -H "$J" -d '{"name":"dave"}'    # 401: no dave
"""


class Launcher:
    """Starts the children in order, watches them, stops them all."""

    def __init__(self, full: bool, log_dir: Path) -> None:
        self.full = full
        self.log_dir = log_dir
        self.procs: list[tuple[Child, subprocess.Popen[bytes]]] = []
        self.temp_dirs: list[Path] = []

    def _spawn(self, child: Child, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{child.name}.log", "ab")  # noqa: SIM115 - the child's
        print(f"starting {child.name:<10} log: {self.log_dir / (child.name + '.log')}")
        return subprocess.Popen(child.argv, cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start_etcd(self, env: dict[str, str]) -> None:
        """Full mode: start a local etcd unless one already answers on 2379."""
        if _listening(("127.0.0.1", 2379)):
            return
        binary = shutil.which("etcd")
        if binary is None:
            raise SystemExit("full mode needs etcd on 127.0.0.1:2379 "
                             "(apt-get install -y etcd-server)")
        data = Path(tempfile.mkdtemp(prefix="mall-etcd-"))
        self.temp_dirs.append(data)
        child = Child("etcd", [binary, "--data-dir", str(data)], ("127.0.0.1", 2379))
        self._wait(child, self._spawn(child, env))
        deadline = time.monotonic() + 30
        while not _etcd_healthy():
            if time.monotonic() > deadline:
                raise SystemExit("etcd did not become healthy within 30 s")
            time.sleep(0.1)

    def _wait(self, child: Child, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
        self.procs.append((child, proc))
        deadline = time.monotonic() + timeout
        while not _listening(child.ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.log_dir / f"{child.name}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{child.name} did not start:\n{tail}")
            time.sleep(0.1)

    def run(self) -> int:
        """Start everything, print the usage, wait for Ctrl-C or a child's exit."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.setdefault("PYTHONUNBUFFERED", "1")
        (ROOT / ".run" / "mall").mkdir(parents=True, exist_ok=True)
        for child in children(self.full):
            if _listening(child.ready):
                raise SystemExit(f"{child.ready[0]}:{child.ready[1]} is taken: is the mall "
                                 "already running?")
        if self.full:
            self.start_etcd(env)
        for child in children(self.full):
            self._wait(child, self._spawn(child, env))
        mode = "full mode: MySQL, Redis, etcd" if self.full else "embedded mode: SQLite"
        print(USAGE.format(mode=mode, budget="" if self.full else BUDGET_EMBEDDED), flush=True)
        while True:
            for child, proc in self.procs:
                if proc.poll() is not None:
                    print(f"{child.name} exited with {proc.returncode}; stopping the rest")
                    return 1
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM every child (newest first), SIGKILL what is still there after 10 s."""
        for _child, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _child, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """The `python -m mall` command line."""
    parser = argparse.ArgumentParser(prog="python -m mall")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start dtmx and the mall's three services")
    run.add_argument("--full", action="store_true",
                     help="MySQL/MariaDB, Redis and etcd instead of SQLite and fixed addresses")
    args = parser.parse_args(argv)
    log_dir = ROOT / ".run" / "mall" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    launcher = Launcher(args.full, log_dir)
    # SIGTERM behaves like Ctrl-C, so `kill <pid>` of the launcher also cleans up.
    signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    try:
        code = launcher.run()
    except KeyboardInterrupt:
        print("\nstopping...")
    finally:
        launcher.stop()
    sys.exit(code)
