"""A real `dtmx serve` (SQLite, admin UI under /ops/admin, fast heartbeats) and a branch service."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.busi import BusiServer
from tests.support.server import ServerProcess
from tests.support.util import free_port

BASE_PATH = "/ops"
HEARTBEAT = 0.2


@pytest.fixture(scope="module")
def busi() -> Iterator[BusiServer]:
    b = BusiServer(free_port()).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = str(tmp_path_factory.mktemp("dtmx-ops"))
    s = ServerProcess(
        workdir=workdir, extra={"AdminBasePath": BASE_PATH, "HeartbeatInterval": HEARTBEAT}
    ).start()
    yield s
    s.stop()


@pytest.fixture
def tag() -> str:
    """A gid prefix of this test's own transactions."""
    return f"op{uuid.uuid4().hex[:8]}"


def submit_saga(server: ServerProcess, gid: str, url: str, token: str = "", **opts: Any) -> None:
    """One-step saga whose action and compensation are at `url` (sent with `token`, if any)."""
    body = {"gid": gid, "trans_type": "saga", "payloads": ['{"amount": 30}'],
            "steps": [{"action": f"{url}/TransOut", "compensate": f"{url}/TransOutRevert"}],
            **opts}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = requests.post(f"{server.url}/submit", json=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text


def unreachable() -> str:
    """A URL where nothing listens: a saga calling it stays submitted, retrying."""
    return f"http://127.0.0.1:{free_port()}"


def dtmx(server: ServerProcess | None, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    """Run the `dtmx` command against `server` (via DTMX_SERVER, as an operator would)."""
    e = dict(os.environ)
    e.pop("DTMX_TOKEN", None)
    if server is not None:
        e["DTMX_SERVER"] = f"http://127.0.0.1:{server.http_port}"
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "dtmx", *args], capture_output=True,
                          text=True, timeout=60, env=e)


CLIENT_TOKEN = "client-token-0123456789"
OPERATOR_TOKEN = "operator-token-0123456789"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with Auth on: one client token and one operator token."""
    tokens = [{"Name": "app", "Token": CLIENT_TOKEN, "Role": "client"},
              {"Name": "ops", "Token": OPERATOR_TOKEN, "Role": "operator"}]
    s = ServerProcess(workdir=str(tmp_path_factory.mktemp("dtmx-auth")),
                      extra={"Auth": {"Tokens": tokens}, "HeartbeatInterval": HEARTBEAT})
    yield s.start()
    s.stop()
