"""A genuine server fault against a real `dtmx serve`: its store answering an error under
it (SQLite: a table dropped by someone else; Redis: a transaction's key overwritten with a
string). The client gets a 5xx, the log keeps the fault's traceback (client errors and an
unreachable store are one line each, see test_hostile_input and test_store_outage), and no
secret (the caller's API token) appears in the log or the answer."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests

from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.util import eventually

TOKEN = "fault-" + uuid.uuid4().hex  # the secret: it must never be logged or answered
AUTH = {"Tokens": [{"Name": "ops", "Token": TOKEN, "Role": "admin"}]}


def _drop_table(server: ServerProcess, gid: str) -> str:
    with sqlite3.connect(server.conf["Store"]["Db"]) as db:
        db.execute("DROP TABLE trans_global")
    return "no such table: trans_global"


def _overwrite_key(server: ServerProcess, gid: str) -> str:
    store = server.conf["Store"]
    r = redis.Redis(host=store["Host"], port=store["Port"], db=int(store["Db"]))
    try:
        keys = [k for k in r.scan_iter(match=store["RedisPrefix"][:-1] + "*")
                if gid.encode() in k and r.type(k) == b"hash"]
        assert keys, "the transaction's hash was not found"
        for k in keys:
            r.set(k, "not a hash")
    finally:
        r.close()
    return "WRONGTYPE"


BREAK: dict[str, Callable[[ServerProcess, str], str]] = {
    "sqlite": _drop_table, "redis": _overwrite_key}


@pytest.fixture(params=["sqlite", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    with scratch_store(request.param, "dtmx_fault", str(tmp_path)) as block, \
            ServerProcess(store=block, workdir=str(tmp_path), extra={"Auth": AUTH},
                          token=TOKEN) as s:
        yield s


def test_a_store_fault_is_a_5xx_with_its_traceback_logged_and_no_secret(
        server: ServerProcess) -> None:
    gid = f"fault-{uuid.uuid4().hex[:10]}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = requests.post(f"{server.url}/prepare", json={"gid": gid, "trans_type": "tcc"},
                      headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    driver = server.conf["Store"]["Driver"]
    reason = BREAK[driver](server, gid)
    r = requests.get(f"{server.url}/query", params={"gid": gid}, headers=auth, timeout=10)
    assert r.status_code == 503, r.text
    assert reason in r.json()["message"]
    assert TOKEN not in r.text
    eventually(lambda: "GET /api/dtmsvr/query 503" in server.log())
    log = server.log()
    assert "Traceback (most recent call last)" in log and reason in log
    assert TOKEN not in log
