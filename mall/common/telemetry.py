"""Tracing (OpenTelemetry, W3C trace context) and logs that carry the trace id and the gid.

user-api starts a span per request and puts its `traceparent` into the saga's branch headers;
dtmx sends branch headers as gRPC metadata, so each rpc service continues the same trace from
its incoming metadata (`server_span`). Direct rpc calls (user-api -> GetUser) carry the
context the same way (`outgoing_metadata`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mall.common.config import TelemetryConf

_PROPAGATOR = TraceContextTextMapPropagator()

#: The gid of the distributed transaction this task works for, for the logs.
current_gid: contextvars.ContextVar[str] = contextvars.ContextVar("mall_gid", default="-")


def setup_tracing(conf: TelemetryConf, default_name: str) -> None:
    """Install the process's tracer provider as `Telemetry` says.

    `otlpgrpc` exports to Endpoint (Jaeger accepts OTLP on 4317), `console` prints spans,
    `none` exports nothing. Called once per process, by a service's entry point (tests that
    run services in-process install their own provider instead).
    """
    batcher = (conf.Batcher or "none").lower()
    processor: SimpleSpanProcessor | BatchSpanProcessor | None = None
    if batcher in ("otlpgrpc", "otlp", "jaeger"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        endpoint = conf.Endpoint or "localhost:4317"
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
    elif batcher == "console":
        processor = SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    elif batcher != "none":
        raise ValueError(f"Telemetry.Batcher {conf.Batcher!r}: use otlpgrpc, console or none")
    # Even without an exporter a real provider makes trace ids, so logs can carry them.
    provider = TracerProvider(
        resource=Resource.create({"service.name": conf.Name or default_name}),
        sampler=ParentBasedTraceIdRatio(conf.Sampler),
    )
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)


def traceparent_headers() -> dict[str, str]:
    """The W3C headers (`traceparent`, maybe `tracestate`) of the current span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying the current trace context to an rpc call."""
    return tuple(traceparent_headers().items())


@contextlib.contextmanager
def server_span(
    tracer: trace.Tracer, name: str, metadata: Mapping[str, str]
) -> Iterator[trace.Span]:
    """A SERVER span continuing the trace named by incoming `metadata` (if any)."""
    parent = _PROPAGATOR.extract(dict(metadata))
    token = otel_context.attach(parent)
    try:
        with tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER) as span:
            yield span
    finally:
        otel_context.detach(token)


def current_trace_id() -> str:
    """The current trace id in hex, or "-"."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else "-"


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = current_trace_id()
        record.gid = current_gid.get()
        return True


def setup_logging(service: str, level: str = "info") -> None:
    """Log lines with the service, the trace id and the gid of the current work."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s {service} trace=%(trace_id)s gid=%(gid)s "
            "%(name)s: %(message)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
