"""examples/embedded_transfer.py runs with one command and does what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_embedded_example_runs(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples/embedded_transfer.py"),
         "--store", str(tmp_path / "dtmx.db"), "--db", str(tmp_path / "app.db")],
        capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "balances before: 1=100 2=0" in r.stdout
    assert re.search(r"^saga \S+: succeed$", r.stdout, re.MULTILINE), r.stdout
    assert re.search(r"^saga \S+: failed \(.*cannot pay 500", r.stdout, re.MULTILINE), r.stdout
    assert "balances after: 1=70 2=30" in r.stdout  # the refused transfer left no trace
