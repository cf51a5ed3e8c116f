"""The sync API's types: the stub is what scripts/gen_sync_stub.py makes from the async
classes today, and mypy (strict) sees real signatures through it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

GOOD = """
from dtmx.client import TransactionState
from dtmx.client.sync import SyncDtmClient, SyncSaga, SyncWorkflows
from dtmx.client.workflow import Workflow

def run(url: str) -> TransactionState | None:
    with SyncDtmClient(url, timeout=5) as client:
        saga: SyncSaga = client.saga(client.new_gid()).add("http://a", "http://c", {"x": 1})
        saga.wait_result = True
        saga.submit()
        with client.tcc(client.new_gid()) as tcc:
            tcc.call_branch({}, "http://t", "http://c", "http://x").status + 1
        return client.query(saga.gid)

def workflow(client: SyncDtmClient) -> bytes:
    workflows = SyncWorkflows(client, "http://127.0.0.1:8000/resume")

    @workflows.register("hello", retry_interval=5)
    async def hello(wf: Workflow, data: bytes) -> bytes:
        return await wf.new_branch().do(lambda barrier: data)

    status, answer = workflows.resume({"gid": "g", "op": "hello"}, b"")
    return workflows.execute("hello", client.new_gid(), b"hi") + bytes(status)
"""

BAD = {
    "misspelled method": ("client.sagaa('g')", 'has no attribute "sagaa"'),
    "wrong argument type": ("client.saga(42)", 'incompatible type "int"'),
    "sync result is not awaitable": (
        "async def f() -> None:\n    await client.new_gid()", 'Incompatible types in "await"'
    ),
    "misspelled option": ("client.saga('g').wait_resultt = True", '"wait_resultt"'),
}


def mypy(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "snippet.py"
    path.write_text(textwrap.dedent(code))
    (tmp_path / "none.ini").write_text("[mypy]\n")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--config-file", str(tmp_path / "none.ini"), str(path)],
        capture_output=True, text=True, timeout=180, check=False,
        cwd=tmp_path,
    )


def test_stub_is_up_to_date() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts/gen_sync_stub.py"), "--check"],
                       timeout=60, check=False)
    assert r.returncode == 0, "src/dtmx/client/sync.pyi is stale: run scripts/gen_sync_stub.py"


def test_mypy_accepts_correct_code_and_flags_mistakes(tmp_path: Path) -> None:
    good = mypy(GOOD, tmp_path)
    assert good.returncode == 0, good.stdout
    body = "from dtmx.client.sync import SyncDtmClient\nclient = SyncDtmClient('http://x')\n"
    body += "\n".join(f"# {name}\n{line}" for name, (line, _) in BAD.items())
    bad = mypy(body, tmp_path)
    assert bad.returncode == 1
    for name, (_, expected) in BAD.items():
        assert expected in bad.stdout, f"{name}: {bad.stdout}"


@pytest.mark.parametrize(
    "twin", ["SyncDtmClient", "SyncSaga", "SyncTcc", "SyncMsg", "SyncXa", "SyncWorkflows"]
)
def test_stub_lists_what_the_runtime_twin_has(twin: str) -> None:
    import dtmx.client.sync as sync

    stub = (ROOT / "src/dtmx/client/sync.pyi").read_text()
    section = stub.split(f"class {twin}:")[1].split("\nclass ")[0]
    runtime = {n for n in dir(getattr(sync, twin)) if not n.startswith("_")}
    for name in runtime:
        assert f"def {name}(" in section, f"{twin}.{name} missing from the stub"
