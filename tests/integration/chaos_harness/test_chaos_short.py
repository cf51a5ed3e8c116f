"""The chaos harness's short form: a few seconds of the bank workload (sagas, TCCs, msgs and
workflows) under faults on SQLite
(server kills, clock jumps, branch faults) and on a private Redis (the same, plus a store
proxy that pauses, drops, slows and cuts connections after a write, server kills right after
a store write, and restarts of the Redis itself). The long form is
`python -m chaos --seconds 600` (see chaos/README.md and chaos/REPORT.md)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from chaos.procs import ROOT


@pytest.mark.parametrize(("store", "seed"), [("sqlite", 11), ("redis", 2)])
def test_chaos_short_form_holds_every_invariant(store: str, seed: int) -> None:
    started = time.monotonic()
    cmd = [sys.executable, "-m", "chaos", "--store", store, "--servers", "2", "--seconds", "8",
           "--seed", str(seed), "--workers", "4", "--quiesce-timeout", "40"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "violations: 0" in report
    # the faults really happened: kills always, store faults on a proxied store
    assert "kill_9" in report, report
    # workflows ran, one client stopped halfway, and the servers called them back
    assert "workflow: " in report and "workflow_client_stopped_halfway" in report, report
    resumes = re.search(r"workflow resume calls by servers: (\d+)", report)
    assert resumes is not None and int(resumes.group(1)) > 0, report
    if store == "redis":  # seed 2's schedule has every kind of store fault in 8 s
        for fault in ("store_pause", "store_restart", "store_cut_after_write",
                      "kill_9_after_write"):
            assert fault in report, report
    print(f"{store}: {time.monotonic() - started:.1f} s\n{report}")
