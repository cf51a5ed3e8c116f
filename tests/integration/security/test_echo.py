"""What a real `dtmx serve` echoes: secret branch headers masked in query/all, never logged;
a branch's answer text capped (or withheld) in rollback_reason and the wait_result answer."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from tests.support.server import ServerProcess

TAIL = "TAIL-" + uuid.uuid4().hex  # the end of a long answer: must not come back
LONG_FAILURE = ("FAILURE " + "x" * 2000 + TAIL).encode()
SECRET = "Bearer sk-" + uuid.uuid4().hex


class Branch(BaseHTTPRequestHandler):
    """`/fail` answers 409 with a long body; anything else succeeds. Records headers."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Branch.seen.append(dict(self.headers))
        fail = self.path.startswith("/fail")
        body = LONG_FAILURE if fail else b'{"dtm_result": "SUCCESS"}'
        self.send_response(409 if fail else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def branch() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Branch)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


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
        assert any(h.get("Authorization") == SECRET for h in Branch.seen)
        assert SECRET not in s.log() and TAIL not in s.log()


def test_answers_can_be_withheld(branch: str, tmp_path: Path) -> None:
    gid = "echo-" + uuid.uuid4().hex
    with ServerProcess(workdir=str(tmp_path), extra={"BranchAnswers": {"Withhold": True}}) as s:
        r = requests.post(f"{s.url}/submit", json=_saga(gid, branch), timeout=15)
        assert r.status_code == 409
        assert "(branch answer withheld)" in r.json()["message"]
        reason = s.query(gid)["transaction"]["rollback_reason"]
        assert "withheld" in reason and "xxx" not in reason
