"""What a real `dtmx serve` echoes: secret branch headers masked in query/all, never logged;
a branch's answer text capped (or withheld) in rollback_reason and the wait_result answer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.branch_stub import SUCCESS, branch_stub
from tests.support.server import ServerProcess

TAIL = "TAIL-" + uuid.uuid4().hex  # the end of a long answer: must not come back
LONG_FAILURE = ("FAILURE " + "x" * 2000 + TAIL).encode()
SECRET = "Bearer sk-" + uuid.uuid4().hex


SEEN: list[dict[str, str]] = []


def _answer(path: str) -> tuple[int, bytes]:
    """`/fail` answers 409 with a long body; anything else succeeds."""
    return (409, LONG_FAILURE) if path.startswith("/fail") else SUCCESS


@pytest.fixture(scope="module")
def branch() -> Iterator[str]:
    with branch_stub(_answer, seen=SEEN) as url:
        yield url


def _saga(gid: str, branch: str, **opts: Any) -> dict[str, Any]:
    return {"gid": gid, "trans_type": "saga", "payloads": ["{}"], "wait_result": True,
            "steps": [{"action": f"{branch}/fail", "compensate": f"{branch}/revert"}], **opts}


def test_secret_headers_masked_and_answers_capped(branch: str, tmp_path: Path) -> None:
    gid = "echo-" + uuid.uuid4().hex
    headers = {"Authorization": SECRET, "X-Api-Key": SECRET, "Cookie": SECRET,
               "X-Session-Token": SECRET, "X-Trace": "trace-1"}
    with ServerProcess(workdir=str(tmp_path)) as s:
        r = requests.post(f"{s.url}/submit", json=_saga(gid, branch, branch_headers=headers),
                          timeout=15)
        assert r.status_code == 409
        message = r.json()["message"]
        assert "return failed: 409 FAILURE xxx" in message and TAIL not in message
        assert len(message.encode()) < 256 + 200  # the cap plus the URL and the prefix

        q = s.query(gid)
        t = q["transaction"]
        assert t["status"] == "failed" and TAIL not in t["rollback_reason"]
        assert t["branch_headers"] == {"Authorization": "***", "X-Api-Key": "***",
                                       "Cookie": "***", "X-Session-Token": "***",
                                       "X-Trace": "trace-1"}
        listed = requests.get(f"{s.url}/all", params={"gid": gid}, timeout=5).json()
        assert listed["transactions"][0]["branch_headers"]["Authorization"] == "***"
        # the branch itself got the real values
        assert any(h.get("Authorization") == SECRET for h in SEEN)
        assert SECRET not in s.log() and TAIL not in s.log()


def test_answers_can_be_withheld(branch: str, tmp_path: Path) -> None:
    gid = "echo-" + uuid.uuid4().hex
    with ServerProcess(workdir=str(tmp_path), extra={"BranchAnswers": {"Withhold": True}}) as s:
        r = requests.post(f"{s.url}/submit", json=_saga(gid, branch), timeout=15)
        assert r.status_code == 409
        assert "(branch answer withheld)" in r.json()["message"]
        reason = s.query(gid)["transaction"]["rollback_reason"]
        assert "withheld" in reason and "xxx" not in reason
