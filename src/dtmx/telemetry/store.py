"""A store wrapper that times every round trip per verb (and makes a span when tracing).

It wraps whichever store the settings chose, so no backend carries telemetry code. Verbs not
listed (open, close, `roundtrips`, ...) pass straight through.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from dtmx.metrics import Metrics
from dtmx.stores.base import Store

if TYPE_CHECKING:  # imported only when tracing is on: OpenTelemetry is optional
    from dtmx.telemetry.tracing import Tracing

VERBS = (
    "ping", "create", "get", "get_branches", "update", "take", "add_branches", "claim_due",
    "oldest_due", "reset_next_cron_time", "reset_cron_time", "scan", "expire_finished",
    "kv_find", "kv_scan", "kv_create", "kv_update", "kv_delete",
)

AsyncFn = Callable[..., Awaitable[Any]]


class ObservedStore:
    """Delegates to `inner`; each verb's latency goes to `dtmx_store_duration_seconds`."""

    def __init__(self, inner: Store, metrics: Metrics, tracing: Tracing | None = None) -> None:
        self.inner = inner
        for verb in VERBS:
            fn = getattr(inner, verb)
            wrapped = _traced(verb, fn, metrics, tracing) if tracing else _timed(verb, fn, metrics)
            setattr(self, verb, wrapped)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def observe_store(inner: Store, metrics: Metrics, tracing: Tracing | None = None) -> Store:
    """`inner` wrapped (typed as the Store it stands for)."""
    return cast(Store, ObservedStore(inner, metrics, tracing))


def _timed(verb: str, fn: AsyncFn, metrics: Metrics) -> AsyncFn:
    async def call(**kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return await fn(**kw)
        finally:
            metrics.store_call(verb, time.perf_counter() - start)

    return call


def _traced(verb: str, fn: AsyncFn, metrics: Metrics, tracing: Tracing) -> AsyncFn:
    timed = _timed(verb, fn, metrics)

    async def call(**kw: Any) -> Any:
        gid = str(kw.get("gid") or getattr(kw.get("trans"), "gid", ""))  # create: trans=
        with tracing.store_span(verb, gid):
            return await timed(**kw)

    return call
