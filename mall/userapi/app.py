"""user-api over HTTP (Starlette + uvicorn), with Prometheus metrics and a span per request.

Routes: POST /user/register, POST /user/login, GET /user/info (Bearer JWT). Answers are
`{"message": ..., "data": ...}` like the seed's, errors `{"message": ...}` with a 4xx/5xx.
Metrics use go-zero's names (http_server_requests_duration_ms, http_server_requests_code_total)
and are served on `Prometheus.Host:Port` + `Path`, apart from the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mall.common.discovery import Discovery
from mall.common.telemetry import current_gid
from mall.userapi.logic import ApiError, UserApiLogic

log = logging.getLogger("mall.userapi.http")

Handler = Callable[[Request], Awaitable[dict[str, Any]]]

_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Metrics:
    """go-zero's HTTP server metrics, in a registry of this app's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.duration = Histogram(
            "http_server_requests_duration_ms",
            "http server requests duration(ms).",
            ["path", "method"],
            buckets=_BUCKETS_MS,
            registry=self.registry,
        )
        self.codes = Counter(
            "http_server_requests_code_total",
            "http server requests error count.",
            ["path", "code", "method"],
            registry=self.registry,
        )

    def observe(self, path: str, method: str, code: int, seconds: float) -> None:
        """Record one request."""
        self.duration.labels(path, method).observe(seconds * 1000)
        self.codes.labels(path, str(code), method).inc()


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise ApiError(400, "request body must be JSON")
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(400, "request body is not valid JSON") from None


class UserApi:
    """The HTTP application around `UserApiLogic`."""

    def __init__(self, logic: UserApiLogic, metrics: Metrics | None = None) -> None:
        self.logic = logic
        self.metrics = metrics or Metrics()
        self.tracer = trace.get_tracer("mall.user-api")
        self._propagator = TraceContextTextMapPropagator()

    def _endpoint(self, path: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            parent = self._propagator.extract(dict(request.headers))
            token = otel_context.attach(parent)
            gid_token = current_gid.set("-")
            try:
                with self.tracer.start_as_current_span(
                    f"{request.method} {path}", kind=trace.SpanKind.SERVER
                ) as span:
                    span.set_attribute("http.route", path)
                    response = await self._answer(request, handler)
                    span.set_attribute("http.status_code", response.status_code)
                    if response.status_code >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR))
                    log.info("%s %s -> %d", request.method, path, response.status_code)
            finally:
                current_gid.reset(gid_token)
                otel_context.detach(token)
            self.metrics.observe(path, request.method, response.status_code,
                                 time.perf_counter() - started)
            return response

        return endpoint

    async def _answer(self, request: Request, handler: Handler) -> Response:
        try:
            data = await handler(request)
        except ApiError as e:
            return JSONResponse({"message": e.message, **e.extra}, status_code=e.status)
        except Exception:
            log.exception("unexpected error")
            return JSONResponse({"message": "internal error"}, status_code=500)
        return JSONResponse({"message": "success", "data": data})

    async def register(self, request: Request) -> dict[str, Any]:
        """POST /user/register {name, gender}."""
        return await self.logic.register(await _json_body(request))

    async def login(self, request: Request) -> dict[str, Any]:
        """POST /user/login {name}."""
        return await self.logic.login(await _json_body(request))

    async def info(self, request: Request) -> dict[str, Any]:
        """GET /user/info with Authorization: Bearer <jwt>."""
        user_id = self.logic.user_id_from(request.headers.get("authorization"))
        return await self.logic.info(user_id)

    def app(self) -> Starlette:
        """The ASGI app."""
        routes = [
            Route("/user/register", self._endpoint("/user/register", self.register),
                  methods=["POST"]),
            Route("/user/login", self._endpoint("/user/login", self.login), methods=["POST"]),
            Route("/user/info", self._endpoint("/user/info", self.info), methods=["GET"]),
        ]
        return Starlette(routes=routes)

    def metrics_app(self, path: str) -> Starlette:
        """The ASGI app serving the metrics at `path`."""

        async def metrics(request: Request) -> Response:
            return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        return Starlette(routes=[Route(path, metrics, methods=["GET"])])


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the process's runner owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class UserApiServer:
    """user-api listening: the API on Host:Port, the metrics on Prometheus.Host:Port."""

    def __init__(self, logic: UserApiLogic) -> None:
        self.logic = logic
        self.api = UserApi(logic)
        self._servers: list[uvicorn.Server] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> UserApiServer:
        """Start both HTTP servers and wait until they listen."""
        conf = self.logic.conf
        apps: list[tuple[Starlette, str, int]] = [(self.api.app(), conf.Host, conf.Port)]
        if conf.Prometheus.Port:
            apps.append((self.api.metrics_app(conf.Prometheus.Path), conf.Prometheus.Host,
                         conf.Prometheus.Port))
        for app, host, port in apps:
            server = _QuietServer(
                uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
            )
            self._servers.append(server)
            task = asyncio.create_task(server.serve())
            self._tasks.append(task)
            while not server.started:
                if task.done():
                    await task
                    raise OSError(f"user-api could not listen on {host}:{port}")
                await asyncio.sleep(0.01)
        log.info("user-api listening on %s:%d", conf.Host, conf.Port)
        return self

    async def stop(self) -> None:
        """Stop serving and close the clients."""
        for server in self._servers:
            server.should_exit = True
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await task
        await self.logic.close()


def build(conf: Any, *, discovery: Discovery | None = None) -> UserApiServer:
    """user-api for a `UserApiConf` (not started)."""
    return UserApiServer(UserApiLogic(conf, discovery=discovery))
