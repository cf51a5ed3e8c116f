"""Around every API request: DTM's request metrics, the optional access log, the server span.

HTTP handlers are wrapped once per route when the routes are built; gRPC methods by one
server interceptor. With tracing off no span code runs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dtmx.errors import DtmxError
from dtmx.metrics import Metrics
from dtmx.net.api_server import Request, Response
from dtmx.telemetry.logs import bind_gid

if TYPE_CHECKING:  # imported only when tracing is on: OpenTelemetry is optional
    from dtmx.telemetry.tracing import Tracing

access = logging.getLogger("dtmx.access")

HttpHandler = Callable[[Request], Awaitable[Response]]


def api_name(path: str) -> str:
    """DTM's `api` label: the last path segment, lower-cased. A route parameter is skipped
    (`/topic/{name}` counts as `topic`) so one series per topic name never appears."""
    parts = [p for p in path.split("/") if p and not p.startswith("{")]
    return parts[-1].lower() if parts else ""


class ApiObserver:
    """Counts, times, logs and traces each API request, HTTP and gRPC alike."""

    def __init__(
        self, metrics: Metrics, *, access_log: bool = False, tracing: Tracing | None = None
    ) -> None:
        self.metrics = metrics
        self.access_log = access_log
        self.tracing = tracing

    def http(self, method: str, route: str, handler: HttpHandler) -> HttpHandler:
        """`handler` of `method route`, observed."""
        api = api_name(route)
        span_name = f"{method} {route}"
        metrics, tracing, access_log = self.metrics, self.tracing, self.access_log

        async def observed(request: Request) -> Response:
            bind_gid("")  # a keep-alive connection must not carry the last request's gid
            start = time.perf_counter()
            status = 500
            try:
                if tracing is None:
                    response = await handler(request)
                else:
                    with tracing.server_span(span_name, request.headers) as span:
                        response = await handler(request)
                        span.set_attribute("http.response.status_code", response.status)
                status = response.status
                return response
            except DtmxError as e:
                status = e.http_status
                raise
            finally:
                elapsed = time.perf_counter() - start
                metrics.request("http", api, status < 400, elapsed)
                if access_log:
                    access.info("%s %s %d %.1fms", method, request.path, status, elapsed * 1000)

        return observed

    def grpc_interceptor(self) -> Any:
        """A grpc.aio server interceptor doing the same for unary gRPC methods."""
        import grpc

        observer = self

        class Interceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
            async def intercept_service(self, continuation: Any, details: Any) -> Any:
                handler = await continuation(details)
                if handler is None or handler.unary_unary is None:
                    return handler
                return grpc.unary_unary_rpc_method_handler(
                    observer._grpc_method(details, handler.unary_unary),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )

        return Interceptor()

    def _grpc_method(self, details: Any, inner: Any) -> Any:
        import grpc

        method: str = details.method
        api = api_name(method)
        metrics, tracing, access_log = self.metrics, self.tracing, self.access_log

        async def observed(request: Any, context: Any) -> Any:
            bind_gid("")
            start = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                if tracing is None:
                    result = await inner(request, context)
                else:
                    carrier = {k: v for k, v in details.invocation_metadata or ()
                               if isinstance(v, str)}
                    with tracing.server_span(method, carrier):
                        result = await inner(request, context)
                code = _code(context) or grpc.StatusCode.OK
                return result
            except BaseException:
                code = _code(context) or grpc.StatusCode.UNKNOWN
                raise
            finally:
                elapsed = time.perf_counter() - start
                metrics.request("grpc", api, code == grpc.StatusCode.OK, elapsed)
                if access_log:
                    access.info("grpc %s %s %.1fms", method, code.name, elapsed * 1000)

        return observed


def _code(context: Any) -> Any:
    with contextlib.suppress(Exception):
        return context.code()
    return None
