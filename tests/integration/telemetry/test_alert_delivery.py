"""How the alert webhook is delivered, against a local listener and a real `dtmx serve`
(SQLite): a refused POST is retried with doubling backoff from `Alert.Backoff`; after
`Alert.Attempts` POSTs the server gives up with one log line that names the alert but not
the webhook's secrets; and a webhook that hangs holds up no transaction.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.busi import BusiServer
from tests.support.server import ServerProcess
from tests.support.util import eventually, free_port
from tests.support.webhook import WebhookListener

BACKOFF = 0.3
ATTEMPTS = 4
# user-info and a token in the query: neither may appear in a log line
SECRETS = ("alert-user", "s3cret-pass", "s3cret-token")


@pytest.fixture(scope="module")
def busi() -> Iterator[BusiServer]:
    b = BusiServer(free_port()).start()
    yield b
    b.stop()


@pytest.fixture
def listener() -> Iterator[WebhookListener]:
    li = WebhookListener(userinfo="alert-user:s3cret-pass", path="/dtm-hook?token=s3cret-token")
    yield li
    li.close()


def alerting_server(workdir: Path, listener: WebhookListener, **alert: Any) -> ServerProcess:
    return ServerProcess(workdir=str(workdir), extra={
        "Log": {"Format": "json"}, "AlertWebHook": listener.url, "AlertRetryLimit": 0,
        "Alert": {"Notify": "retry,failed", "Attempts": ATTEMPTS, "Backoff": BACKOFF,
                  **alert}})


def saga(server: ServerProcess, busi: BusiServer, gid: str, route: str) -> None:
    r = requests.post(f"{server.url}/submit", timeout=10, json={
        "gid": gid, "trans_type": "saga", "payloads": ["{}"],
        "steps": [{"action": f"{busi.url}/{route}", "compensate": f"{busi.url}/{route}Revert"}]})
    assert r.status_code == 200, r.text


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(x) for x in server.log().splitlines() if x.startswith("{")]


def test_refused_posts_back_off_doubling_then_give_up_with_one_line(
    busi: BusiServer, listener: WebhookListener, tmp_path: Path
) -> None:
    late, lost = f"late-{uuid.uuid4().hex}", f"lost-{uuid.uuid4().hex}"
    listener.refuse = {late: ATTEMPTS - 1, lost: 1_000}  # late: the last attempt gets in
    busi.state.set("Refused", "FAILURE")  # each saga fails at once: one `failed` alert each
    with alerting_server(tmp_path, listener, Timeout=2) as server:
        saga(server, busi, late, "Refused")
        arrivals = eventually(lambda: len(a := listener.arrivals(late)) == ATTEMPTS and a)
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        # the sender sleeps Backoff, then twice that, then four times (plus a POST's time)
        for n, gap in enumerate(gaps):
            expected = BACKOFF * 2**n
            assert expected * 0.95 <= gap <= expected * 1.5 + 0.25, (n, gaps)
        eventually(lambda: any(x.get("gid") == late and x["msg"].startswith("sent failed")
                               for x in json_lines(server)))

        saga(server, busi, lost, "Refused")

        def given_up() -> list[dict[str, Any]]:
            return [x for x in json_lines(server)
                    if x.get("gid") == lost and "not delivered" in x["msg"]]

        lines = eventually(given_up)
        assert len(listener.arrivals(lost)) == ATTEMPTS  # and not one POST more
        assert len(lines) == 1 and lines[0]["level"] == "error", lines
        assert f"failed alert for {lost}" in lines[0]["msg"]
        assert f"after {ATTEMPTS} attempts (HTTP 500)" in lines[0]["msg"]
    # nothing more on stop either
    assert len(given_up()) == 1 and len(listener.arrivals(lost)) == ATTEMPTS
    log = server.log()
    assert server.proc is not None and server.proc.returncode == 0, log[-2000:]
    assert not [s for s in SECRETS if s in log], log  # user-info and token never logged


def test_a_hanging_webhook_holds_up_no_transaction(
    busi: BusiServer, listener: WebhookListener, tmp_path: Path
) -> None:
    # a POST may take 30 s: the sender waits that long on each
    with alerting_server(tmp_path, listener, Timeout=30) as server:

        def run_erring_once(gid: str) -> float:
            """Seconds from submit to succeed of a saga whose branch errors once (a retry
            alert is queued at the error, then the retry succeeds)."""
            busi.state.set("Erring", "ERROR", "SUCCESS")
            start = time.monotonic()
            saga(server, busi, gid, "Erring")
            server.wait_status(gid, "succeed")
            return time.monotonic() - start

        normal = run_erring_once(f"normal-{uuid.uuid4().hex}")
        eventually(lambda: len(listener.posts) == 1)  # its alert went out and was answered

        listener.hang.set()
        busi.state.set("Refused", "FAILURE")
        stuck = f"stuck-{uuid.uuid4().hex}"
        saga(server, busi, stuck, "Refused")
        server.wait_status(stuck, "failed")
        eventually(lambda: listener.hanging == 1)  # its alert's POST is held
        for _ in range(3):  # each queues an alert behind the held one
            hung = run_erring_once(f"while-hung-{uuid.uuid4().hex}")
            assert hung < normal + 1.0, (hung, normal)
        assert listener.hanging == 1 and len(listener.posts) == 2  # still held, none behind it
