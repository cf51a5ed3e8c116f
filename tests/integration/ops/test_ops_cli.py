"""The operator commands against a real `dtmx serve`: output, --json and exit codes."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from tests.integration.ops.conftest import (
    BASE_PATH,
    CLIENT_TOKEN,
    OPERATOR_TOKEN,
    dtmx,
    submit_saga,
    unreachable,
)
from tests.support.busi import BusiServer
from tests.support.server import ServerProcess
from tests.support.util import eventually


def _json(r: subprocess.CompletedProcess[str]) -> Any:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_version() -> None:
    r = dtmx(None, "--version")
    assert r.returncode == 0 and r.stdout.startswith("dtmx ")


def test_tx_show_lists_every_call_of_a_branch(server: ServerProcess, busi: BusiServer,
                                               tag: str) -> None:
    """A step answering ERROR twice, then SUCCESS: three calls in the query answer and in
    `dtmx tx show`, with their results, reasons and retry times; no header value kept."""
    gid, route = f"{tag}-flaky", f"Flaky{tag}"
    busi.state.set(route, "ERROR", "ERROR", "SUCCESS")
    body = {"gid": gid, "trans_type": "saga", "payloads": ['{"amount": 30}'],
            "steps": [{"action": f"{busi.url}/{route}", "compensate": f"{busi.url}/{route}R"}],
            "branch_headers": {"Authorization": "Bearer secret-token-42"}}
    r = requests.post(f"{server.url}/submit", json=body, timeout=10)
    assert r.status_code == 200, r.text
    answer = server.wait_status(gid, "succeed")
    assert "secret-token-42" not in json.dumps(answer)
    calls = answer["calls"]
    assert [(c["branch_id"], c["op"], c["attempt"], c["result"]) for c in calls] == [
        ("01", "action", 1, "ERROR"), ("01", "action", 2, "ERROR"), ("01", "action", 3, "SUCCESS")]
    assert [c["retries"] for c in calls] == [0, 1, 2]
    for c in calls[:2]:
        assert c["reason"].startswith("500") and "busi error" in c["reason"]
        assert c["next_retry_time"] > c["start_time"]
    assert calls[2]["reason"] == "" and "next_retry_time" not in calls[2]
    assert all(c["duration_ms"] >= 0 and c["server"] for c in calls)
    assert calls[0]["start_time"] < calls[1]["start_time"] < calls[2]["start_time"]

    full = _json(dtmx(server, "tx", "show", gid, "--json"))
    assert [(c["attempt"], c["result"]) for c in full["calls"]] == [
        (1, "ERROR"), (2, "ERROR"), (3, "SUCCESS")]
    text = dtmx(server, "tx", "show", gid).stdout
    rows = [ln.split() for ln in text.split("Calls (oldest first)")[1].splitlines()[1:]]
    assert rows[0][:3] == ["BRANCH", "OP", "ATTEMPT"]
    assert [(r[0], r[1], r[2], r[5]) for r in rows[1:]] == [
        ("01", "action", "1", "ERROR"), ("01", "action", "2", "ERROR"),
        ("01", "action", "3", "SUCCESS")]


def test_the_history_limits_come_from_the_settings(busi: BusiServer, tag: str,
                                                    tmp_path: Path) -> None:
    """Limits.MaxCallsPerBranch 3: of six calls the first and the newest two are kept;
    Limits.MaxCallReasonBytes 16: each reason cut to 16 bytes and marked."""
    s = ServerProcess(workdir=str(tmp_path), extra={
        "Limits": {"MaxCallsPerBranch": 3, "MaxCallReasonBytes": 16},
        "RetryInterval": 0.05}).start()
    try:
        gid, route = f"{tag}-limits", f"Limits{tag}"
        busi.state.set(route, *["ERROR"] * 5, "SUCCESS")
        body = {"gid": gid, "trans_type": "saga", "payloads": ["{}"],
                "steps": [{"action": f"{busi.url}/{route}", "compensate": ""}]}
        assert requests.post(f"{s.url}/submit", json=body, timeout=10).status_code == 200
        calls = s.wait_status(gid, "succeed", timeout=30)["calls"]
        assert [(c["attempt"], c["result"]) for c in calls] == [
            (1, "ERROR"), (5, "ERROR"), (6, "SUCCESS")]
        assert calls[0]["reason"] == '500 {"message": ...(truncated)'  # 16 bytes + mark
    finally:
        s.stop()


def test_tx_list_show_retry_stop(server: ServerProcess, busi: BusiServer, tag: str) -> None:
    ok, stuck = f"{tag}-ok", f"{tag}-stuck"
    submit_saga(server, ok, busi.url)
    # retry_interval 30: after its first failed call the stuck saga waits, so a retry shows
    submit_saga(server, stuck, unreachable(), retry_interval=30)
    server.wait_status(ok, "succeed")
    eventually(lambda: server.query(stuck)["transaction"]["next_cron_interval"] >= 30)

    rows = _json(dtmx(server, "tx", "list", "--gid-prefix", tag, "--json"))
    assert [t["gid"] for t in rows] == [stuck, ok]
    rows = _json(dtmx(server, "tx", "list", "--gid-prefix", tag, "--status", "succeed",
                      "--json"))
    assert [t["gid"] for t in rows] == [ok]
    assert _json(dtmx(server, "tx", "list", "--gid-prefix", tag, "--type", "tcc",
                      "--json")) == []
    assert len(_json(dtmx(server, "tx", "list", "--gid-prefix", tag, "--since", "10m",
                          "--json"))) == 2
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert _json(dtmx(server, "tx", "list", "--gid-prefix", tag, "--since", later,
                      "--json")) == []
    assert len(_json(dtmx(server, "tx", "list", "--gid-prefix", tag, "--limit", "1",
                          "--json"))) == 1
    text = dtmx(server, "tx", "list", "--gid-prefix", tag)
    lines = text.stdout.splitlines()
    assert lines[0].split()[:3] == ["GID", "TYPE", "STATUS"]
    assert lines[1].split()[:3] == [stuck, "saga", "submitted"]
    assert lines[2].split()[:3] == [ok, "saga", "succeed"]

    shown = dtmx(server, "tx", "show", ok)
    assert shown.returncode == 0
    assert any(line.split() == ["status", "succeed"] for line in shown.stdout.splitlines())
    branch_part = shown.stdout.split("Calls (oldest first)")[0]
    branch_rows = [ln.split() for ln in branch_part.splitlines() if ln.startswith("01 ")]
    assert {(r[1], r[2]) for r in branch_rows} == {("action", "succeed"),
                                                     ("compensate", "prepared")}
    full = _json(dtmx(server, "tx", "show", ok, "--json"))
    assert full["transaction"]["gid"] == ok and len(full["branches"]) == 2

    # retry now: the waiting saga is called again at once, and its interval doubles
    before = server.query(stuck)["transaction"]["next_cron_interval"]
    r = dtmx(server, "tx", "retry", stuck)
    assert r.returncode == 0 and "due now" in r.stdout
    eventually(lambda: server.query(stuck)["transaction"]["next_cron_interval"] > before)

    r = dtmx(server, "tx", "stop", stuck)
    assert r.returncode == 0, r.stderr
    assert server.status(stuck) == "failed"
    assert server.query(stuck)["transaction"]["rollback_reason"] == "force stopped"
    # exit codes scripts can rely on
    again = dtmx(server, "tx", "stop", stuck)
    assert again.returncode == 1 and "409" in again.stderr
    assert dtmx(server, "tx", "retry", f"{tag}-none").returncode == 3
    assert dtmx(server, "tx", "show", f"{tag}-none").returncode == 3
    assert dtmx(server, "tx", "list", "--limit", "0").returncode == 2
    assert dtmx(server, "tx", "list", "--since", "yesterday-ish").returncode == 2
    assert dtmx(server, "tx", "list", "--status", "bogus").returncode == 2
    down = dtmx(None, "tx", "list", "--server", unreachable())
    assert down.returncode == 5 and "cannot reach" in down.stderr


def test_topics(server: ServerProcess, tag: str) -> None:
    topic = f"{tag}-topic"
    r = dtmx(server, "topics", "add", topic, "http://127.0.0.1:1/a", "--remark", "first")
    assert r.returncode == 0, r.stderr
    assert dtmx(server, "topics", "add", topic, "http://127.0.0.1:1/b").returncode == 0
    assert dtmx(server, "topics", "add", topic, "http://127.0.0.1:1/b").returncode == 1
    listed = [t for t in _json(dtmx(server, "topics", "list", "--json"))
              if t["topic"] == topic]
    assert [(s["url"], s["remark"]) for s in listed[0]["subscribers"]] == [
        ("http://127.0.0.1:1/a", "first"), ("http://127.0.0.1:1/b", "")]
    table = dtmx(server, "topics", "list").stdout
    assert any(ln.split() == [topic, "http://127.0.0.1:1/a", "first"] for ln in table.splitlines())
    assert dtmx(server, "topics", "remove", topic, "http://127.0.0.1:1/a").returncode == 0
    assert dtmx(server, "topics", "remove", topic, "http://127.0.0.1:1/a").returncode == 3
    assert dtmx(server, "topics", "remove", topic).returncode == 0
    assert dtmx(server, "topics", "remove", topic).returncode == 3
    assert all(t["topic"] != topic
               for t in _json(dtmx(server, "topics", "list", "--json")))


def test_servers_sharing_a_store_and_their_health(server: ServerProcess) -> None:
    def servers() -> list[dict[str, Any]]:
        return _json(dtmx(server, "servers", "--json"))

    first = eventually(servers)
    assert [(s["http_port"], s["health"]) for s in first] == [(server.http_port, "up")]
    # a second server on the same store, then a crash (kill -9): it shows as down
    other = ServerProcess(store=server.conf["Store"], extra={"HeartbeatInterval": 0.2}).start()
    try:
        by_port = eventually(lambda: {s["http_port"]: s for s in servers() if s["health"] == "up"}
                             if len(servers()) == 2 else None)
        assert set(by_port) == {server.http_port, other.http_port}
        text = dtmx(server, "servers").stdout.splitlines()
        assert text[0].split()[:2] == ["SERVER", "HEALTH"] and len(text) == 3
        other.kill()
        eventually(lambda: {s["http_port"]: s["health"] for s in servers()}
                   == {server.http_port: "up", other.http_port: "down"}, timeout=10)
    finally:
        other.stop()
    # a server that stops cleanly takes its record with it
    third = ServerProcess(store=server.conf["Store"], extra={"HeartbeatInterval": 0.2}).start()
    eventually(lambda: any(s["http_port"] == third.http_port for s in servers()))
    third.stop()
    eventually(lambda: all(s["http_port"] != third.http_port for s in servers()))


def test_admin_assets_under_admin_base_path(server: ServerProcess) -> None:
    root = f"http://127.0.0.1:{server.http_port}{BASE_PATH}/admin"
    page = requests.get(root, timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert f'src="{BASE_PATH}/admin/app.js"' in page.text
    assert requests.get(f"{root}/", timeout=5).text == page.text
    js = requests.get(f"{root}/app.js", timeout=5)
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    assert "http://" not in js.text and "https://" not in js.text  # nothing leaves the machine
    assert requests.get(f"{root}/app.css", timeout=5).headers["Content-Type"].startswith("text/css")
    missing = requests.get(f"{root}/../../etc/passwd", timeout=5)
    assert missing.status_code == 404
    assert requests.get(f"{root}/nothing.js", timeout=5).status_code == 404
    assert requests.get(f"http://127.0.0.1:{server.http_port}/admin", timeout=5).status_code == 404


def test_tokens_and_roles(auth_server: ServerProcess, tag: str) -> None:
    gid = f"{tag}-auth"
    submit_saga(auth_server, gid, unreachable(), token=CLIENT_TOKEN)
    no_token = dtmx(auth_server, "tx", "list")
    assert no_token.returncode == 4 and "401" in no_token.stderr
    client = dtmx(auth_server, "tx", "list", "--token", CLIENT_TOKEN)
    assert client.returncode == 4 and "403" in client.stderr
    assert dtmx(auth_server, "tx", "show", gid, "--token", CLIENT_TOKEN).returncode == 0
    assert dtmx(auth_server, "tx", "stop", gid, "--token", CLIENT_TOKEN).returncode == 4
    assert dtmx(auth_server, "servers", "--token", CLIENT_TOKEN).returncode == 4
    ops = {"DTMX_TOKEN": OPERATOR_TOKEN}
    rows = _json(dtmx(auth_server, "tx", "list", "--gid-prefix", tag, "--json", env=ops))
    assert [t["gid"] for t in rows] == [gid]
    assert len(_json(dtmx(auth_server, "servers", "--json", env=ops))) == 1
    assert dtmx(auth_server, "tx", "stop", gid, env=ops).returncode == 0
    shown = _json(dtmx(auth_server, "tx", "show", gid, "--json", env=ops))
    assert shown["transaction"]["status"] == "failed"
