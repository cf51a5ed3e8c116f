"""What the telemetry hooks cost per call, with tracing off and on (issue 12).

    .venv/bin/python -m bench.telemetry_overhead [--calls 20000]

Times, on one real SQLite store in a temp directory, `get` of one row: the bare store, the
store behind the metrics wrapper (what every server runs), and behind the wrapper with
tracing on (OpenTelemetry SDK, spans recorded, no exporter). Then the engine observer's
per-branch hook with tracing off. Prints one JSON object; each number is the best of 5
rounds, in microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dtmx.clock import SystemClock
from dtmx.core.models import Branch, Op, Outcome, Status, Transaction, TransType
from dtmx.invoke.base import CallResult
from dtmx.metrics import Metrics
from dtmx.settings import load
from dtmx.stores import make_store
from dtmx.telemetry.observer import Observer
from dtmx.telemetry.store import observe_store


async def _per_call(fn: Callable[[], Awaitable[Any]], calls: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            await fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


async def main(calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load(None, env={"STORE_DB": f"{tmp}/bench.db"})
        store = make_store(settings)
        await store.open()
        trans = Transaction(gid="bench", trans_type=TransType.SAGA, status=Status.SUBMITTED)
        await store.create(trans=trans, branches=[])
        observed = observe_store(store, Metrics())
        off_imports = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        out: dict[str, Any] = {"calls": calls, "opentelemetry_imported_when_off": off_imports}
        out["store_get_bare_us"] = await _per_call(lambda: store.get(gid="bench"), calls)
        out["store_get_metrics_us"] = await _per_call(lambda: observed.get(gid="bench"), calls)

        from opentelemetry import trace

        from dtmx.settings import TelemetrySettings
        from dtmx.telemetry.tracing import Tracing

        tracing = Tracing(TelemetrySettings(), env={"OTEL_TRACES_EXPORTER": "none"})
        traced = observe_store(store, Metrics(), tracing)
        with tracing.tracer.start_as_current_span("bench"):  # store spans need a parent
            assert trace.get_current_span().is_recording()
            out["store_get_traced_us"] = await _per_call(lambda: traced.get(gid="bench"),
                                                         calls)
        await store.close()

    observer = Observer(clock=SystemClock())
    branch = Branch(gid="bench", branch_id="01", op=Op.ACTION, url="http://b/x", data=b"")
    ok = CallResult(Outcome.SUCCESS)

    async def hook() -> None:
        observer.branch(trans, branch, ok)

    out["observer_branch_hook_off_us"] = await _per_call(hook, calls)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=20000)
    print(json.dumps(asyncio.run(main(p.parse_args().calls)), indent=1))
