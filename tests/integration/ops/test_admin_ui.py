"""The admin UI in a real headless Chromium (Debian's, driven by Playwright) against a real
`dtmx serve`: list, filter, open a transaction, force-stop it, topics, servers.

Screenshots go to test-artifacts/admin/ (ignored by git) for a human to look at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.ops.conftest import (
    BASE_PATH,
    CLIENT_TOKEN,
    OPERATOR_TOKEN,
    submit_saga,
    unreachable,
)
from tests.support.busi import BusiServer
from tests.support.server import ServerProcess

CHROMIUM = os.environ.get("DTMX_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "admin"
# No network of its own: no updates, no sync, nothing but the page under test.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

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
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
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
