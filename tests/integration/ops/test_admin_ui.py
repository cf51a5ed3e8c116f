"""The admin UI in a real headless Chromium (Debian's, driven by Playwright) against a real
`dtmx serve`: list, filter, open a transaction, force-stop it, topics, servers.

Screenshots go to test-artifacts/admin/ (ignored by git) for a human to look at.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.ops.conftest import (
    BASE_PATH,
    CLIENT_TOKEN,
    HEARTBEAT,
    OPERATOR_TOKEN,
    submit_saga,
    unreachable,
)
from tests.support.busi import BusiServer
from tests.support.server import ServerProcess
from tests.support.util import eventually
from tests.support.workflow import HttpWorkflow

CHROMIUM = os.environ.get("DTMX_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "admin"
# No network of its own: no updates, no sync, nothing but the page under test.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
# The browser's zone: not UTC (the server's), and half an hour off, so that a page mixing
# local and UTC times shows it.
BROWSER_TZ, BROWSER_OFFSET_MIN = "Asia/Kolkata", -330

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM}: scripts/services.sh installs Debian's chromium",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id=BROWSER_TZ)
    pg = ctx.new_page()
    pg.set_default_timeout(10_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    outside: list[str] = []
    pg.on("request", lambda r: None if r.url.startswith(
        (f"http://127.0.0.1:{server.http_port}/", "data:")) else outside.append(r.url))
    yield pg
    ctx.close()
    assert errors == [], errors
    assert outside == [], f"requests left the machine: {outside}"


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_list_filter_open_force_stop(page: Any, server: ServerProcess, busi: BusiServer,
                                     tag: str) -> None:
    ok, stuck = f"{tag}-ok", f"{tag}-stuck"
    submit_saga(server, ok, busi.url)
    submit_saga(server, stuck, unreachable(), retry_interval=30)
    server.wait_status(ok, "succeed")
    admin = f"http://127.0.0.1:{server.http_port}{BASE_PATH}/admin/"

    page.goto(admin)
    page.wait_for_selector(f'#transactions tr[data-gid="{stuck}"]')
    page.wait_for_selector(f'#transactions tr[data-gid="{ok}"]')
    shot(page, "1-list")

    # filter: this test's gids, submitted only
    page.fill('#filters input[name="prefix"]', tag)
    page.select_option('#filters select[name="status"]', "submitted")
    page.click('#filters button[type="submit"]')
    page.wait_for_function(
        "document.querySelectorAll('#transactions tr[data-gid]').length === 1")
    rows = page.locator("#transactions tr[data-gid]")
    assert rows.first.get_attribute("data-gid") == stuck
    assert "status=submitted" in page.url and f"prefix={tag}" in page.url
    shot(page, "2-filtered")

    # live refresh: a transaction submitted now appears without a reload
    late = f"{tag}-late"
    submit_saga(server, late, unreachable(), retry_interval=30)
    page.wait_for_selector(f'#transactions tr[data-gid="{late}"]')

    # open it: facts, both branches with their payloads as JSON, then as hex
    page.click(f'#transactions tr[data-gid="{stuck}"] a')
    page.wait_for_selector("#timeline li[data-branch]")
    assert page.locator("#timeline li[data-branch]").count() == 2
    first = page.locator("#timeline li[data-branch]").first
    assert first.get_attribute("data-branch") == "01/action"
    assert '"amount": 30' in first.locator("pre.payload").inner_text()
    first.locator("button", has_text="hex").click()
    assert "7b 22 61 6d 6f 75 6e 74" in first.locator("pre.payload").inner_text()  # {"amount
    assert page.locator(".facts [data-status]").first.inner_text() == "submitted"
    shot(page, "3-transaction")

    # force stop, cancelled first, then confirmed
    page.click("#force-stop")
    page.wait_for_selector("#confirm[open]")
    shot(page, "4-confirm")
    page.click("#confirm-no")
    assert server.status(stuck) == "submitted"
    page.click("#force-stop")
    page.click("#confirm-yes")
    page.wait_for_selector('.facts [data-status="failed"]')
    assert server.status(stuck) == "failed"
    assert page.locator("#force-stop").count() == 0  # nothing to stop any more
    assert "force stopped" in page.locator(".facts").inner_text()
    shot(page, "5-stopped")

    page.click("text=‹ Transactions")
    page.wait_for_selector(f'#transactions tr[data-gid="{stuck}"] [data-status="failed"]')


def test_transaction_page_shows_each_call(page: Any, server: ServerProcess, busi: BusiServer,
                                          tag: str) -> None:
    """The timeline: each call of each branch op with its result, reason, retry and next
    retry time (a first step answering ERROR twice, then SUCCESS)."""
    gid, flaky = f"{tag}-calls", f"UiFlaky{tag}"
    busi.state.set(flaky, "ERROR", "ERROR", "SUCCESS")
    body = {"gid": gid, "trans_type": "saga",
            "payloads": ['{"amount": 30}', '{"amount": 30}'],
            "steps": [{"action": f"{busi.url}/{flaky}", "compensate": f"{busi.url}/TransOutRevert"},
                      {"action": f"{busi.url}/TransIn", "compensate": f"{busi.url}/TransInRevert"}]}
    assert requests.post(f"{server.url}/submit", json=body, timeout=10).status_code == 200
    server.wait_status(gid, "succeed")

    page.goto(f"http://127.0.0.1:{server.http_port}{BASE_PATH}/admin/#/tx/{gid}")
    page.wait_for_selector('#timeline li[data-branch="02/action"] tr[data-call]')
    first = page.locator('#timeline li[data-branch="01/action"]')
    rows = first.locator("tr[data-call]")
    assert rows.count() == 3
    assert [rows.nth(i).get_attribute("data-result") for i in range(3)] == [
        "ERROR", "ERROR", "SUCCESS"]
    assert [rows.nth(i).get_attribute("data-call") for i in range(3)] == [
        "01/action/1", "01/action/2", "01/action/3"]
    err = rows.nth(1).inner_text()
    assert "retry 1" in err and "next 20" in err and "busi error" in err and " ms" in err
    assert "first call" in rows.nth(0).inner_text()
    assert "next" not in rows.nth(2).locator("td").nth(5).inner_text()
    second = page.locator('#timeline li[data-branch="02/action"] tr[data-call]')
    assert second.count() == 1 and second.first.get_attribute("data-result") == "SUCCESS"
    # compensations were never called: no call rows
    assert page.locator('#timeline li[data-branch="01/compensate"] tr[data-call]').count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "14-calls.png"))  # the README's docs/admin.png


def test_topics_and_servers(page: Any, server: ServerProcess, tag: str) -> None:
    topic = f"{tag}-topic"
    page.goto(f"http://127.0.0.1:{server.http_port}{BASE_PATH}/admin/#/topics")
    page.fill('#subscribe input[name="topic"]', topic)
    page.fill('#subscribe input[name="url"]', "http://127.0.0.1:1/hook")
    page.fill('#subscribe input[name="remark"]', "from the UI")
    page.click('#subscribe button[type="submit"]')
    card = page.locator(f'[data-topic="{topic}"]')
    card.wait_for()
    assert "from the UI" in card.inner_text()
    shot(page, "6-topics")
    card.locator("button", has_text="Remove").click()
    page.click("#confirm-yes")
    page.wait_for_function(
        f"!document.querySelector('[data-topic=\"{topic}\"] tbody tr')")
    kv = requests.get(f"{server.url}/queryKV", params={"cat": "topics", "key": topic},
                      timeout=5).json()["kv"]
    assert kv and kv[0]["v"] == "[]"

    page.click("text=Servers")
    page.wait_for_selector('#servers tr[data-server] [data-status="up"]')
    assert str(server.http_port) in page.locator("#servers").inner_text()
    shot(page, "7-servers")


def test_token_prompt_and_roles(browser: Any, auth_server: ServerProcess, tag: str) -> None:
    gid = f"{tag}-auth"
    submit_saga(auth_server, gid, unreachable(), token=OPERATOR_TOKEN)
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    admin = f"http://127.0.0.1:{auth_server.http_port}/admin/"
    try:
        # no token: the UI asks for one; a client token sees a transaction but no actions
        page.goto(admin)
        page.wait_for_selector("#login[open]")
        shot(page, "8-token")
        page.fill("#token", CLIENT_TOKEN)
        page.click("#login-ok")
        page.wait_for_selector("#who:has-text('role: client')")
        page.wait_for_selector("main .error:has-text('403')")  # listing needs an operator
        page.goto(f"{admin}#/tx/{gid}")
        page.wait_for_selector('.facts [data-status="submitted"]')
        assert page.locator("#force-stop").count() == 0
        # sign out, then an operator token: the actions are there and work
        page.click("#logout")
        page.wait_for_selector("#login[open]")
        page.fill("#token", OPERATOR_TOKEN)
        page.click("#login-ok")
        page.wait_for_selector("#who:has-text('role: operator')")
        page.goto(f"{admin}#/tx/{gid}")
        page.click("#force-stop")
        page.click("#confirm-yes")
        page.wait_for_selector('.facts [data-status="failed"]')
    finally:
        ctx.close()


def _admin(server: ServerProcess) -> str:
    return f"http://127.0.0.1:{server.http_port}{BASE_PATH}/admin/"


def _gids(page: Any) -> list[str]:
    return [r.get_attribute("data-gid") for r in page.locator("#transactions tr[data-gid]").all()]


def _listed(page: Any, count: int) -> list[str]:
    """The gids listed once exactly `count` rows are shown."""
    page.wait_for_function(
        f"document.querySelectorAll('#transactions tr[data-gid]').length === {count}")
    return _gids(page)


def _shown_time(iso: str) -> str:
    """An API time as the UI prints it (fmtTime in app.js): seconds, UTC as Z."""
    return re.sub(r"\.\d+", "", iso.replace("T", " ")).replace("+00:00", "Z")


def test_retry_now_moves_the_next_retry(page: Any, server: ServerProcess, tag: str) -> None:
    gid = f"{tag}-retry"
    submit_saga(server, gid, unreachable(), retry_interval=60)

    def rescheduled() -> str:  # the first call failed: the next is due a minute later
        t = server.query(gid)["transaction"]
        due = datetime.fromisoformat(t["next_cron_time"])
        assert due > datetime.now(UTC) + timedelta(seconds=30), t
        return str(t["next_cron_time"])

    before = eventually(rescheduled)
    page.goto(f"{_admin(server)}#/tx/{gid}")
    next_retry = page.locator('.facts dt:text-is("next retry") + dd')
    next_retry.wait_for()
    assert next_retry.inner_text().startswith(_shown_time(before))
    page.click("#retry-now")
    page.click("#confirm-yes")

    def moved() -> str:  # due now, then called again (and failed) by the poller
        after = str(server.query(gid)["transaction"]["next_cron_time"])
        assert after != before
        return after

    eventually(moved)
    # the page shows the server's new next retry time (after its own reload or a live one)
    page.wait_for_function(
        """old => { const dt = [...document.querySelectorAll(".facts dt")]
             .find((d) => d.textContent === "next retry");
           return dt && !dt.nextElementSibling.textContent.startsWith(old); }""",
        arg=_shown_time(before))

    def shows_the_servers() -> bool:  # the poller may reschedule it once more meanwhile
        due = _shown_time(str(server.query(gid)["transaction"]["next_cron_time"]))
        assert next_retry.inner_text().startswith(due), (next_retry.inner_text(), due)
        return True

    eventually(shows_the_servers)
    shot(page, "9-retried")


def test_paging_newer_and_older(page: Any, server: ServerProcess, busi: BusiServer,
                                tag: str) -> None:
    gids = {f"{tag}-p{i:02d}" for i in range(23)}  # one page of 20 and three more
    for gid in sorted(gids):
        submit_saga(server, gid, busi.url)
    page.goto(_admin(server))
    page.fill('#filters input[name="prefix"]', tag)
    page.click('#filters button[type="submit"]')
    first = _listed(page, 20)
    assert page.locator("#prev").is_disabled() and page.locator("#next").is_enabled()
    page.click("#next")
    page.wait_for_selector(".pager span:text-is('page 2')")
    second = _listed(page, 3)
    assert page.locator("#next").is_disabled() and page.locator("#prev").is_enabled()
    assert set(first) | set(second) == gids and not set(first) & set(second)
    shot(page, "10-older")
    page.click("#prev")
    page.wait_for_selector(".pager span:text-is('page 1')")
    assert sorted(_listed(page, 20)) == sorted(first)


def test_type_filter(page: Any, server: ServerProcess, busi: BusiServer, tag: str) -> None:
    saga, msg, wf = f"{tag}-saga", f"{tag}-msg", f"{tag}-wf"
    submit_saga(server, saga, busi.url)
    r = requests.post(f"{server.url}/submit", timeout=10, json={
        "gid": msg, "trans_type": "msg", "payloads": ["{}"],
        "steps": [{"action": f"{busi.url}/TransIn"}]})
    assert r.status_code == 200, r.text
    workflow = HttpWorkflow(server.url)
    workflow.prepare(wf, "transfer", b"{}", callback=unreachable())
    assert workflow.submit(wf, "succeed").code == 200
    page.goto(f"{_admin(server)}#/transactions?prefix={tag}")
    assert sorted(_listed(page, 3)) == sorted([saga, msg, wf])
    options = page.locator('#filters select[name="type"] option').all_inner_texts()
    assert {"saga", "tcc", "msg", "xa", "workflow"} <= set(options)
    for trans_type, gid in (("workflow", wf), ("msg", msg), ("saga", saga)):
        page.select_option('#filters select[name="type"]', trans_type)
        page.click('#filters button[type="submit"]')
        page.wait_for_function(
            f"""(() => {{ const r = document.querySelectorAll('#transactions tr[data-gid]');
                return r.length === 1 && r[0].dataset.gid === {gid!r}; }})()""")
        assert f"type={trans_type}" in page.url
        assert page.locator(f'#transactions tr[data-gid="{gid}"] td').nth(1).inner_text() \
            == trans_type
    shot(page, "11-type-saga")


def _shown_created(page: Any, gid: str) -> str:
    """The Created cell of `gid`'s row, as the list shows it."""
    return str(page.locator(f'#transactions tr[data-gid="{gid}"] td').nth(3).inner_text())


def _typed(shown: str, plus: int = 0) -> str:
    """A time read off the list (`plus` seconds on), as an operator types it into a filter."""
    t = datetime.strptime(shown, "%Y-%m-%d %H:%M:%SZ") + timedelta(seconds=plus)
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def test_time_range_filter(page: Any, server: ServerProcess, busi: BusiServer,
                           tag: str) -> None:
    early, late = f"{tag}-early", f"{tag}-late"

    def created(gid: str) -> float:
        return datetime.fromisoformat(server.query(gid)["transaction"]["create_time"]).timestamp()

    submit_saga(server, early, busi.url)
    early_s = math.floor(created(early))
    eventually(lambda: time.time() >= early_s + 2.05, timeout=5)  # the late one 2 s on
    submit_saga(server, late, busi.url)
    late_s = math.floor(created(late))
    assert late_s >= early_s + 2

    # the browser is in another zone than UTC; the list shows UTC, the filter takes UTC
    page.goto(f"{_admin(server)}#/transactions?prefix={tag}")
    assert page.evaluate("new Date().getTimezoneOffset()") == BROWSER_OFFSET_MIN
    assert sorted(_listed(page, 2)) == sorted([early, late])
    shown = {g: _shown_created(page, g) for g in (early, late)}
    for g, s in ((early, early_s), (late, late_s)):
        assert shown[g] == datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    labels = page.locator("#filters label").all_inner_texts()
    assert {"Created from (UTC)", "to (UTC)"} <= {t.strip() for t in labels}
    page.fill('#filters input[name="from"]', _typed(shown[late]))
    page.click('#filters button[type="submit"]')
    page.wait_for_function("location.hash.includes('from=')")
    assert _listed(page, 1) == [late]
    shot(page, "12-from")
    page.fill('#filters input[name="from"]', "")
    page.fill('#filters input[name="to"]', _typed(shown[early], 1))
    page.click('#filters button[type="submit"]')
    page.wait_for_function("location.hash.includes('to=') && !location.hash.includes('from=')")
    assert _listed(page, 1) == [early]
    page.fill('#filters input[name="from"]', _typed(shown[early]))
    page.fill('#filters input[name="to"]', _typed(shown[late], 1))
    page.click('#filters button[type="submit"]')
    page.wait_for_function("location.hash.includes('from=') && location.hash.includes('to=')")
    assert sorted(_listed(page, 2)) == sorted([early, late])


def test_two_servers_sharing_one_store(page: Any, server: ServerProcess) -> None:
    second = ServerProcess(store={"Driver": "sqlite", "Db": str(server.workdir / "dtmx.db")},
                           extra={"AdminBasePath": BASE_PATH, "HeartbeatInterval": HEARTBEAT})
    with second:
        page.goto(f"{_admin(server)}#/servers")
        for s in (server, second):  # both, each with its health
            page.wait_for_selector(
                f'#servers tr[data-server]:has(td:text-is("{s.http_port}")) [data-status="up"]')
        shot(page, "13-two-servers")
        # the second answers the same (the page here may talk to the first server only)
        listed = requests.get(f"{second.base}/api/admin/servers", timeout=5).json()["servers"]
        assert {(s["http_port"], s["health"]) for s in listed} >= {
            (server.http_port, "up"), (second.http_port, "up")}, listed
    # a server that stops cleanly removes its record: the other lists itself alone
    page.goto(f"{_admin(server)}#/servers")
    page.wait_for_function(
        f"""(() => {{ const t = document.querySelector('#servers');
            return t && t.textContent.includes('{server.http_port}')
                   && !t.textContent.includes('{second.http_port}'); }})()""")
