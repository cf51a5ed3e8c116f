"""OpenTelemetry spans of the server, exported over OTLP. Imported only when tracing is on.

Spans: one SERVER span per API request (child of the caller's `traceparent` / gRPC metadata),
one per engine run (`dtmx run`, or `dtmx poller pick-up` when the poller claimed it), one
CLIENT span per branch call (its `traceparent` goes to the branch, so the branch's span is
its child), one CLIENT span per store round trip. Attributes: dtm.gid, dtm.trans_type,
dtm.branch_id, dtm.op.

Configuration is OpenTelemetry's own: OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _PROTOCOL,
_HEADERS, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_TRACES_EXPORTER
(otlp, console, none); the `Telemetry:` block fills in what the environment leaves unset.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from dtmx.core.models import Outcome, Transaction
from dtmx.errors import ConfigError
from dtmx.invoke.base import BranchCall, CallResult, Invoker
from dtmx.settings import TelemetrySettings

# the span of the engine run in progress in this task, and the token that made it current
_run: contextvars.ContextVar[tuple[Span, object] | None] = contextvars.ContextVar(
    "dtmx_run_span", default=None
)


def _exporter(t: TelemetrySettings, env: Mapping[str, str]) -> SpanExporter | None:
    kind = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    if kind != "otlp":
        raise ConfigError(f"OTEL_TRACES_EXPORTER must be otlp, console or none, not {kind!r}")
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or t.Protocol)
    endpoint = t.Endpoint or None  # None: the exporter reads OTEL_EXPORTER_OTLP_*ENDPOINT
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = None
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )
    except ImportError:
        raise ConfigError("OTLP over HTTP needs opentelemetry-exporter-otlp-proto-http"
                          " (pip install 'dtmx[tracing]')") from None
    if endpoint and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    exporter: SpanExporter = HttpExporter(endpoint=endpoint)
    return exporter


class Tracing:
    """The server's tracer and the few span shapes it makes."""

    def __init__(self, settings: TelemetrySettings, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        name = env.get("OTEL_SERVICE_NAME") or settings.ServiceName
        self.provider = TracerProvider(resource=Resource.create({"service.name": name}))
        exporter = _exporter(settings, env)
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("dtmx")

    # ---- API requests ---------------------------------------------------------------------
    @contextlib.contextmanager
    def server_span(self, name: str, carrier: Mapping[str, str]) -> Iterator[Span]:
        """A SERVER span continuing the caller's trace (W3C traceparent in `carrier`)."""
        with self.tracer.start_as_current_span(
            name, context=extract(carrier), kind=SpanKind.SERVER
        ) as span:
            yield span

    def annotate(self, gid: str, trans_type: str = "", branch_id: str = "") -> None:
        """Name the transaction on the current span (the request's)."""
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(_attrs(gid, trans_type, branch_id))

    def trace_id(self) -> str:
        """The current span's trace id in hex, or "" outside a trace."""
        ctx = trace.get_current_span().get_span_context()
        return format(ctx.trace_id, "032x") if ctx.is_valid else ""

    # ---- engine runs ------------------------------------------------------------------------
    def run_started(self, trans: Transaction) -> None:
        """Open the span of a run: a child of the request that started it, or of the submitter's
        traceparent when the poller picked it up.
        """
        parent: Any = None
        links: list[trace.Link] = []
        name = "dtmx run"
        current = trace.get_current_span()
        if not current.get_span_context().is_valid:
            # claimed by the poller: continue the trace of whoever submitted it, when the
            # transaction carries their traceparent in its branch headers
            name = "dtmx poller pick-up"
            parent = extract(trans.options.branch_headers)
        elif getattr(current, "parent", True) is None and _has_traceparent(trans):
            # the request came without trace context (e.g. a client that sends it only in
            # branch_headers): the run joins the submitter's trace, linked to the request
            parent = extract(trans.options.branch_headers)
            links.append(trace.Link(current.get_span_context()))
        span = self.tracer.start_span(
            name, context=parent, links=links,
            attributes=_attrs(trans.gid, trans.trans_type.value) | {
                "dtm.status": trans.status.value},
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        _run.set((span, token))

    def run_ended(self, trans: Transaction) -> None:
        """Close the run's span with the status the transaction reached."""
        current = _run.get()
        if current is None:
            return
        span, token = current
        _run.set(None)
        span.set_attribute("dtm.status", trans.status.value)
        otel_context.detach(token)  # type: ignore[arg-type]
        span.end()

    # ---- store and branches -------------------------------------------------------------------
    @contextlib.contextmanager
    def store_span(self, verb: str, gid: str) -> Iterator[None]:
        """A CLIENT span of one store round trip, inside a traced request or run only: the
        poller's idle polling every TransCronInterval would otherwise be a trace each."""
        if not trace.get_current_span().get_span_context().is_valid:
            yield
            return
        attrs = {"db.operation.name": verb, "dtm.op": verb}
        if gid:
            attrs["dtm.gid"] = gid
        with self.tracer.start_as_current_span(f"store {verb}", kind=SpanKind.CLIENT,
                                               attributes=attrs):
            yield

    def invoker(self, inner: Invoker) -> Invoker:
        """`inner` wrapped so that each branch call gets a CLIENT span and a traceparent."""
        return TracedInvoker(inner, self)

    def shutdown(self) -> None:
        """Export what is buffered and stop (on server stop)."""
        self.provider.shutdown()


class TracedInvoker:
    """A CLIENT span per branch call; its traceparent replaces any in the branch headers."""

    def __init__(self, inner: Invoker, tracing: Tracing) -> None:
        self.inner = inner
        self.tracer = tracing.tracer

    async def call(self, call: BranchCall) -> CallResult:
        """Call the branch in a CLIENT span; its traceparent replaces any in the headers."""
        attrs = _attrs(call.gid, call.trans_type, call.branch_id) | {
            "dtm.op": call.op, "url.full": call.url}
        parent: Any = None
        if not trace.get_current_span().get_span_context().is_valid:
            parent = extract(call.headers)
        with self.tracer.start_as_current_span(
            f"dtmx {call.op} {call.branch_id}", context=parent, kind=SpanKind.CLIENT,
            attributes=attrs,
        ) as span:
            headers = dict(call.headers)
            for k in [k for k in headers if k.lower() in ("traceparent", "tracestate")]:
                del headers[k]
            inject(headers)
            # then=None: a Followup would go out from the transport's callback, before this
            # wrapper could give it its own span and traceparent; traced calls go one by one
            result = await self.inner.call(replace(call, headers=headers, then=None))
            span.set_attribute("dtm.outcome", result.outcome.value)
            if result.outcome is Outcome.ERROR:
                span.set_status(Status(StatusCode.ERROR, result.detail[:200]))
            return result

    async def close(self) -> None:
        """Close the wrapped invoker."""
        await self.inner.close()


def _has_traceparent(trans: Transaction) -> bool:
    return any(k.lower() == "traceparent" for k in trans.options.branch_headers)


def _attrs(gid: str, trans_type: str = "", branch_id: str = "") -> dict[str, str]:
    out = {"dtm.gid": gid}
    if trans_type:
        out["dtm.trans_type"] = trans_type
    if branch_id:
        out["dtm.branch_id"] = branch_id
    return out
