"""The score service killed (kill -9) before its step of a registration, then restarted:
user-api answers "pending" in time, dtmx retries, and the end state is all or nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mall.tests.conftest import Mall, unique_name
from tests.support.server import ServerProcess
from tests.support.util import aeventually

ROOT = Path(__file__).resolve().parents[2]


class ScoreProcess:
    """user-score rpc as a child process (`python -m mall.userscore -f <yaml>`)."""

    def __init__(self, mall: Mall, workdir: Path) -> None:
        self.mall = mall
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "score.log"

    async def start(self, **changes: Any) -> None:
        """Start and wait (without blocking the loop: in-process services must answer)."""
        if changes:
            self.mall.score_conf = dataclasses.replace(self.mall.score_conf, **changes)
        conf = self.workdir / "userscore.yaml"
        conf.write_text(yaml.safe_dump(dataclasses.asdict(self.mall.score_conf)))
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mall.userscore", "-f", str(conf)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )

        async def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"score rpc exited: {self.log.read_text()[-2000:]}")
            return "listening on" in self.log.read_text()

        await aeventually(up, timeout=20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


async def _status_is(dtmx: ServerProcess, gid: str, status: str) -> bool:
    # dtmx's HTTP query in a thread: the loop keeps serving the in-process services.
    return await asyncio.to_thread(dtmx.status, gid) == status


@pytest.fixture
def score_process(mall_factory: Any, tmp_path: Path) -> Iterator[ScoreProcess]:
    mall: Mall = mall_factory(budget=1000)
    sp = ScoreProcess(mall, tmp_path)
    yield sp
    sp.stop()


@pytest.mark.parametrize(("budget_after", "outcome"), [(1000, "succeed"), (10, "failed")])
async def test_score_killed_mid_registration(
    score_process: ScoreProcess, dtmx: ServerProcess, budget_after: int, outcome: str
) -> None:
    mall = score_process.mall
    await mall.start_user()
    await score_process.start()
    await mall.start_api()
    async with httpx.AsyncClient(timeout=15, trust_env=False) as http:
        ok = await http.post(f"{mall.base}/user/register",
                             json={"name": unique_name("before"), "gender": "male"})
        assert ok.status_code == 200, ok.text

        score_process.kill()
        name = unique_name("during")
        started = time.monotonic()
        r = await http.post(f"{mall.base}/user/register", json={"name": name, "gender": "male"})
        elapsed = time.monotonic() - started
    assert r.status_code == 202, r.text
    assert elapsed < mall.api_conf.RegisterTimeout + 1
    body = r.json()
    assert "pending" in body["message"]
    gid, user_id = body["gid"], int(body["id"])
    assert dtmx.status(gid) == "submitted"
    assert await mall.users_named(name) == [(user_id, name)]  # step 1 done, step 2 pending

    # Back up: with room in the budget the saga completes; without, it rolls back entirely.
    await score_process.start(ScoreBudget=budget_after)
    await aeventually(lambda: _status_is(dtmx, gid, outcome), timeout=20)

    async def settled() -> bool:
        users = await mall.users_named(name)
        points = await mall.points(user_id)
        if outcome == "succeed":
            return users == [(user_id, name)] and points == [(user_id, 10)]
        return users == [] and points == []

    await aeventually(settled, timeout=5)
