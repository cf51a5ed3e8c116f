"""DTM's HTTP routes under /api/dtmsvr, thin over `Service`, served by `dtmx.net.api_server`.

Errors are mapped once, in `_error_response`: our `DtmxError`s carry their status and body;
anything else is a 500 with a generic message (and a log line), never a stack trace to the
client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from dtmx import __version__
from dtmx.api.serialize import branch_json, kv_json, query_json, trans_json
from dtmx.core.models import ScanFilter, Status
from dtmx.core.request import parse_trans_body, parse_trans_type
from dtmx.errors import BadRequest, DtmxError
from dtmx.metrics import Metrics
from dtmx.net.api_server import (
    HttpServer,
    Request,
    Response,
    Routes,
    ServerLimits,
    json_response,
)
from dtmx.security.guard import Guard
from dtmx.service import Service
from dtmx.telemetry.api import ApiObserver

log = logging.getLogger("dtmx.http")

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
SUCCESS = orjson.dumps({"dtm_result": "SUCCESS"})
Handler = Callable[[Request], Awaitable[Any]]


def _error_response(request: Request, e: Exception) -> Response:
    if isinstance(e, DtmxError):
        if e.http_status >= 500:
            log.warning("%s %s: %s", request.method, request.path, e.message)
        return json_response(e.body(), e.http_status)
    log.error("%s %s failed", request.method, request.path, exc_info=e)
    return json_response({"message": "internal server error"}, 500)


def _wrap(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A handler returns None (SUCCESS), a JSON-able value, or a Response."""

    async def handler(request: Request) -> Response:
        out = await fn(request)
        if out is None:
            return Response(SUCCESS)
        if isinstance(out, Response):
            return out
        return json_response(out)

    return handler


async def _body(request: Request) -> Any:
    raw = request.body
    if not raw:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"malformed JSON: {e}") from None


def _int_arg(request: Request, name: str, default: int, *, lo: int = 0) -> int:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if v < lo:
        raise BadRequest(f"{name} must be >= {lo}")
    return v


def _gid_from_body(body: Any) -> str:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    gid = body.get("gid")
    if not isinstance(gid, str):
        raise BadRequest("gid is required and must be a string")
    return gid


class HttpApi:
    def __init__(
        self,
        service: Service,
        metrics: Metrics,
        *,
        timeout_to_fail: float,
        guard: Guard | None = None,
        observer: ApiObserver | None = None,
    ) -> None:
        self.svc = service
        self.metrics = metrics
        self.observer = observer or ApiObserver(metrics)
        self.timeout_to_fail = timeout_to_fail
        self.guard = guard
        self.health: Callable[[], Awaitable[bool]] | None = None

    def server(self, limits: ServerLimits | None = None) -> HttpServer:
        """The HTTP server of these routes, holding at most `limits` per connection."""
        p = "/api/dtmsvr"
        routes = [
            ("GET", f"{p}/version", self.version),
            ("GET", f"{p}/newGid", self.new_gid),
            ("POST", f"{p}/prepare", self.prepare),
            ("POST", f"{p}/submit", self.submit),
            ("POST", f"{p}/abort", self.abort),
            ("POST", f"{p}/forceStop", self.force_stop),
            ("POST", f"{p}/registerBranch", self.register_branch),
            ("POST", f"{p}/registerTccBranch", self.register_branch),
            ("POST", f"{p}/registerXaBranch", self.register_branch),
            ("POST", f"{p}/prepareWorkflow", self.prepare_workflow),
            ("GET", f"{p}/query", self.query),
            ("GET", f"{p}/all", self.all),
            ("GET", f"{p}/resetCronTime", self.reset_cron_time),
            ("POST", f"{p}/resetNextCronTime", self.reset_next_cron_time),
            ("GET", f"{p}/subscribe", self.subscribe),
            ("GET", f"{p}/unsubscribe", self.unsubscribe),
            ("DELETE", f"{p}/topic/{{name}}", self.delete_topic),
            ("GET", f"{p}/scanKV", self.scan_kv),
            ("GET", f"{p}/queryKV", self.query_kv),
            ("GET", "/api/ping", self.ping),
            ("GET", "/api/health", self.healthz),
            ("GET", "/api/metrics", self.prometheus),
        ]
        table = Routes()
        for method, path, fn in routes:
            handler = _wrap(fn)
            # every route behind the role it needs (security.roles), when a guard is given
            if self.guard:
                handler = self.guard.http(path, handler)
            # observed outside the guard: refused requests count and are logged too
            table.add(method, path, self.observer.http(method, path, handler))
        return HttpServer(table, error_response=_error_response,
                          limits=limits or ServerLimits())

    async def version(self, r: Request) -> Any:
        return {"version": f"dtmx-{__version__}"}

    async def new_gid(self, r: Request) -> Any:
        return {"gid": await self.svc.new_gid(), "dtm_result": "SUCCESS"}

    async def prepare(self, r: Request) -> Any:
        await self.svc.prepare(parse_trans_body(await _body(r)))

    async def submit(self, r: Request) -> Any:
        await self.svc.submit(parse_trans_body(await _body(r)))

    async def abort(self, r: Request) -> Any:
        await self.svc.abort(parse_trans_body(await _body(r)))

    async def force_stop(self, r: Request) -> Any:
        await self.svc.force_stop(_gid_from_body(await _body(r)))

    async def reset_next_cron_time(self, r: Request) -> Any:
        await self.svc.reset_next_cron_time(_gid_from_body(await _body(r)))

    async def register_branch(self, r: Request) -> Any:
        body = await _body(r)
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object of strings")
        await self.svc.register_branch(body)

    async def prepare_workflow(self, r: Request) -> Any:
        trans, branches = await self.svc.prepare_workflow(parse_trans_body(await _body(r)))
        return {"transaction": trans_json(trans), "progresses": [branch_json(b) for b in branches]}

    async def query(self, r: Request) -> Any:
        gid = r.query.get("gid", "")
        if not gid:
            raise BadRequest("no gid specified")
        return query_json(*await self.svc.query(gid))

    async def all(self, r: Request) -> Any:
        q = r.query
        status = q.get("status") or None
        try:
            filters = ScanFilter(
                status=Status(status) if status else None,
                trans_type=parse_trans_type(q["transType"]) if q.get("transType") else None,
                create_time_start=_ms(q.get("createTimeStart")),
                create_time_end=_ms(q.get("createTimeEnd")),
            )
        except ValueError:
            raise BadRequest(f"unknown status {status!r}") from None
        limit = _int_arg(r, "limit", 100, lo=1)
        transactions, position = await self.svc.all(
            gid=q.get("gid", ""), position=q.get("position", ""), limit=limit, filters=filters
        )
        return {"transactions": [trans_json(t) for t in transactions], "next_position": position}

    async def reset_cron_time(self, r: Request) -> Any:
        timeout = _int_arg(r, "timeout", int(3 * self.timeout_to_fail))
        limit = _int_arg(r, "limit", 100, lo=1)
        count, remaining = await self.svc.reset_cron_time(timeout=timeout, limit=limit)
        return {"has_remaining": remaining, "succeed_count": count}

    async def subscribe(self, r: Request) -> Any:
        q = r.query
        await self.svc.subscribe(q.get("topic", ""), q.get("url", ""), q.get("remark", ""))

    async def unsubscribe(self, r: Request) -> Any:
        await self.svc.unsubscribe(r.query.get("topic", ""), r.query.get("url", ""))

    async def delete_topic(self, r: Request) -> Any:
        await self.svc.delete_topic(r.match_info.get("name", ""))

    async def scan_kv(self, r: Request) -> Any:
        kvs, position = await self.svc.scan_kv(
            cat=r.query.get("cat", ""),
            position=r.query.get("position", ""),
            limit=_int_arg(r, "limit", 100, lo=1),
        )
        return {"kv": [kv_json(k) for k in kvs], "next_position": position}

    async def query_kv(self, r: Request) -> Any:
        kvs = await self.svc.query_kv(cat=r.query.get("cat", ""), key=r.query.get("key", ""))
        return {"kv": [kv_json(k) for k in kvs]}

    async def ping(self, r: Request) -> Any:
        return {"msg": "pong"}

    async def healthz(self, r: Request) -> Any:
        ok = await self.health() if self.health else True
        return json_response({"healthy": ok}, 200 if ok else 503)

    async def prometheus(self, r: Request) -> Any:
        return Response(await self.metrics.render(), content_type=PROMETHEUS_TEXT)


def _ms(v: str | None) -> float | None:
    if not v:
        return None
    try:
        return int(v) / 1000.0
    except ValueError:
        raise BadRequest("createTimeStart/createTimeEnd must be epoch milliseconds") from None
