"""The OpenAPI document against a live `dtmx serve`: schemathesis generates requests for
every route (valid and invalid), the admin UI's JSON routes included, and checks each
answer: never a 5xx, and status, content type and body as the document says. SQLite, plus
one run on Redis. Bounded: a fixed seed and a fixed number of examples per route (about
10 s per store)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from dtmx.api.http import openapi_document
from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.util import eventually

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_every_answer_matches_the_document(store: str, tmp_path: Path,
                                           cleanup: contextlib.ExitStack) -> None:
    block = cleanup.enter_context(scratch_store(store, "dtmx_st", str(tmp_path)))
    server = ServerProcess(store=block, workdir=str(tmp_path)).start()
    try:
        base = f"http://127.0.0.1:{server.http_port}"
        served = requests.get(f"{base}/api/openapi.json", timeout=5)
        assert served.status_code == 200 and served.content == openapi_document()
        # the admin server list is checked populated (this server's heartbeat is in it)
        eventually(lambda: requests.get(f"{base}/api/admin/servers", timeout=5
                                        ).json()["servers"])
        exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
        assert exe, "schemathesis is a dev dependency (pip install -e '.[dev]')"
        r = subprocess.run(
            [exe, "run", f"{base}/api/openapi.json", "--url", base, "--checks", CHECKS,
             "--max-examples", "30", "--seed", "1", "--no-shrink", "--request-timeout", "10"],
            capture_output=True, text=True, timeout=240, cwd=tmp_path,
        )
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        assert "passed" in r.stdout
    finally:
        server.stop()
    assert "Traceback" not in server.log()
