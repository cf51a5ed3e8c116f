"""The runnable examples, end to end: each script in a subprocess against a real server.

Each run starts the example's FastAPI service on a free port with its own SQLite file and
submits one transaction; the test checks the balances the script prints at the end and the
final status the server holds for the gid it printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess
from tests.support.services import pg_dsn
from tests.support.util import free_port

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RUN_TIMEOUT = 60.0

AFTER = re.compile(r"^balances after: 1=(\d+) 2=(\d+)", re.MULTILINE)
BEFORE = re.compile(r"^balances before: 1=(\d+) 2=(\d+)", re.MULTILINE)
FROZEN_AFTER = re.compile(r"^balances after: .*\(frozen: 1=(\d+) 2=(\d+)\)", re.MULTILINE)
GID = re.compile(r"^(?:saga|tcc|msg|workflow) (\S+):", re.MULTILINE)


@pytest.fixture(scope="module")
def dtm_server() -> Iterator[ServerProcess]:
    server = ServerProcess().start()
    yield server
    server.stop()


def run_example(server: ServerProcess, tmp_path: Path, script: str, *args: str) -> str:
    """Run `examples/<script>` to completion and return its stdout (asserting exit 0)."""
    cmd = [
        sys.executable,
        str(EXAMPLES / script),
        "--port", str(free_port()),
        "--db", str(tmp_path / "example.db"),
        *args,
    ]
    env = {**os.environ, "DTMX_SERVER": server.url, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert proc.returncode == 0, f"{script} {args} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def balances(pattern: re.Pattern[str], out: str) -> tuple[int, int]:
    m = pattern.search(out)
    assert m, f"no match for {pattern.pattern!r} in:\n{out}"
    return int(m[1]), int(m[2])


def gid_of(out: str) -> str:
    m = GID.search(out)
    assert m, f"no gid printed:\n{out}"
    return m[1]


@pytest.mark.parametrize(
    ("script", "args", "expected", "status"),
    [
        ("fastapi_saga.py", (), (70, 130), "succeed"),
        ("fastapi_saga.py", ("--refuse-in",), (100, 100), "failed"),
        ("fastapi_saga.py", ("--amount", "500"), (100, 100), "failed"),
        ("fastapi_tcc.py", (), (70, 130), "succeed"),
        ("fastapi_tcc.py", ("--refuse-in",), (100, 100), "failed"),
        ("fastapi_tcc.py", ("--amount", "500"), (100, 100), "failed"),
        ("msg.py", (), (70, 130), "succeed"),
        ("msg.py", ("--amount", "500"), (100, 100), "failed"),
        ("msg.py", ("--skip-submit",), (70, 130), "succeed"),
        ("fastapi_workflow.py", (), (70, 130), "succeed"),
        ("fastapi_workflow.py", ("--refuse-in",), (100, 100), "failed"),
        ("fastapi_workflow.py", ("--amount", "500"), (100, 100), "failed"),
        ("fastapi_workflow.py", ("--interrupt",), (70, 130), "succeed"),
    ],
    ids=[
        "saga", "saga-refuse-in", "saga-insufficient",
        "tcc", "tcc-refuse-in", "tcc-insufficient",
        "msg", "msg-local-refusal", "msg-query-prepared",
        "workflow", "workflow-refuse-in", "workflow-insufficient", "workflow-resumed",
    ],
)
def test_example(
    dtm_server: ServerProcess,
    tmp_path: Path,
    script: str,
    args: tuple[str, ...],
    expected: tuple[int, int],
    status: str,
) -> None:
    out = run_example(dtm_server, tmp_path, script, *args)
    assert balances(BEFORE, out) == (100, 100), out
    assert balances(AFTER, out) == expected, out
    # The script has already waited for the end; the server must agree on the outcome.
    assert dtm_server.status(gid_of(out)) == status, out


@pytest.mark.parametrize("args", [(), ("--refuse-in",)], ids=["confirm", "cancel"])
def test_tcc_leaves_nothing_frozen(
    dtm_server: ServerProcess, tmp_path: Path, args: tuple[str, ...]
) -> None:
    # With --refuse-in, TransIn's cancel arrives for a try that never committed: without the
    # barrier it would unfreeze money that was never frozen (account 2 frozen = -30).
    out = run_example(dtm_server, tmp_path, "fastapi_tcc.py", *args)
    assert balances(FROZEN_AFTER, out) == (0, 0), out


def test_rerun_on_same_database(dtm_server: ServerProcess, tmp_path: Path) -> None:
    # The scripts reset the balances and keep the barrier table: a second run is independent.
    for _ in range(2):
        out = run_example(dtm_server, tmp_path, "fastapi_saga.py")
        assert balances(AFTER, out) == (70, 130), out


@pytest.mark.parametrize(
    ("args", "expected", "status", "logged"),
    [((), (70, 130), "succeed", 1), (("--xa-refuse",), (100, 100), "failed", 0),
     (("--refuse-in",), (100, 100), "failed", 0)],
    ids=["committed", "refused", "rolled-back-after-prepare"],
)
def test_workflow_with_xa_step(
    dtm_server: ServerProcess, tmp_path: Path, args: tuple[str, ...],
    expected: tuple[int, int], status: str, logged: int,
) -> None:
    # The XA step writes the transfer log in PostgreSQL: committed with the workflow, or
    # (when it refuses) rolled back with the transfer, as the local and HTTP steps are.
    out = run_example(dtm_server, tmp_path, "fastapi_workflow.py", "--xa-pg", pg_dsn(), *args)
    assert balances(AFTER, out) == expected, out
    assert dtm_server.status(gid_of(out)) == status, out
    assert f"transfer log rows: {logged}" in out, out
