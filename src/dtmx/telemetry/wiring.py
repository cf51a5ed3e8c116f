"""Builds the server's telemetry from settings: one object the server start-up wires in."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dtmx.clock import Clock
from dtmx.invoke.base import Invoker
from dtmx.metrics import Metrics
from dtmx.settings import Settings, alert_kinds
from dtmx.stores.base import Store
from dtmx.telemetry.alerts import AlertConfig, AlertKind, Alerts
from dtmx.telemetry.api import ApiObserver
from dtmx.telemetry.observer import Observer
from dtmx.telemetry.store import observe_store

if TYPE_CHECKING:
    from dtmx.telemetry.tracing import Tracing

log = logging.getLogger("dtmx.telemetry")

_TRUE = ("1", "true", "yes", "on")


def tracing_enabled(s: Settings, env: Mapping[str, str] | None = None) -> bool:
    """On with `Telemetry.Tracing`, or when the environment names an OTLP endpoint or an
    exporter (OTEL_TRACES_EXPORTER other than none); OTEL_SDK_DISABLED=true turns it off."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    if s.Telemetry.Tracing:
        return True
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return True
    return env.get("OTEL_TRACES_EXPORTER", "none").strip().lower() not in ("", "none")


def _grpc_version() -> str:
    try:
        import grpc
    except ImportError:
        return ""
    return str(getattr(grpc, "__version__", ""))


class Telemetry:
    """Metrics, tracing (when on), alerts (when AlertWebHook is set) and their hooks."""

    def __init__(self, s: Settings, clock: Clock, env: Mapping[str, str] | None = None) -> None:
        self.metrics = Metrics(dtm_labels=s.Telemetry.DtmLabels, grpc_version=_grpc_version())
        self.tracing: Tracing | None = None
        if tracing_enabled(s, env):
            try:
                from dtmx.telemetry.tracing import Tracing
            except ImportError:
                log.warning("tracing is configured but OpenTelemetry is not installed"
                            " (pip install 'dtmx[tracing]'); running without spans")
            else:
                self.tracing = Tracing(s.Telemetry, env)
        self.alerts: Alerts | None = None
        if s.AlertWebHook:
            config = AlertConfig(
                url=s.AlertWebHook, retry_limit=s.AlertRetryLimit,
                kinds=frozenset(AlertKind(k) for k in alert_kinds(s.Alert)),
                stuck_after=s.Alert.StuckAfter, timeout=s.Alert.Timeout,
                attempts=s.Alert.Attempts, backoff=s.Alert.Backoff,
            )  # fmt: skip
            self.alerts = Alerts(config, clock=clock)
        self.observer = Observer(clock=clock, metrics=self.metrics, alerts=self.alerts,
                                 base_interval=s.RetryInterval, tracing=self.tracing)
        self.api = ApiObserver(self.metrics, access_log=s.Log.AccessLog, tracing=self.tracing)

    def store(self, store: Store, clock: Clock) -> Store:
        """`store` with its latency (and spans) observed; the lag probe reads it."""
        self.metrics.count_store_roundtrips(lambda: store.roundtrips)
        observed = observe_store(store, self.metrics, self.tracing)

        async def poller_lag() -> None:
            now = clock.now()
            try:
                oldest = await store.oldest_due(now=now)
            except Exception as e:  # a scrape must still answer while the store is down
                log.debug("poller lag not read: %s", e)
                return
            self.metrics.poller_lag.set(0.0 if oldest is None else max(0.0, now - oldest))

        self.metrics.add_probe(poller_lag)
        return observed

    def invoker(self, invoker: Invoker) -> Invoker:
        """`invoker`, traced when tracing is on."""
        return invoker if self.tracing is None else self.tracing.invoker(invoker)

    def grpc_interceptors(self) -> list[object]:
        """The gRPC server interceptors that count, log and trace API calls."""
        return [self.api.grpc_interceptor()]

    async def close(self) -> None:
        """Send queued alerts (2 s at most), then stop alerts and flush spans."""
        if self.alerts is not None:
            await self.alerts.drain(timeout=2.0)
            await self.alerts.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # flushes: may wait on I/O
