"""DTM's HTTP routes under /api/dtmsvr, thin over `Service`, served by `dtmx.net.api_server`.

Input is checked by `dtmx.core.request` (shared with gRPC). Errors are mapped once, in
`_error_response`: our `DtmxError`s carry their status and body and are one log line
(method, route, status, reason); anything else is a 500 with a generic message to the
client and the traceback in the log. `HttpApi.routes()` is the route table: add routes
there and describe them in `dtmx/api/openapi.json` (served at `GET /api/openapi.json`;
a unit test keeps the two in step).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import orjson

from dtmx import __version__
from dtmx.api.json_rpc import PATH as JSON_RPC_PATH
from dtmx.api.json_rpc import JsonRpcApi
from dtmx.api.serialize import branch_json, kv_json, query_json, trans_json
from dtmx.core.limits import Limits
from dtmx.core.models import ScanFilter, Status
from dtmx.core.query import query_int, query_position
from dtmx.core.request import (
    Verb,
    check_gid,
    check_trans,
    parse_registration,
    parse_topic,
    parse_trans_body,
    parse_trans_type,
)
from dtmx.core.timing import reset_cron_after
from dtmx.errors import BadRequest, DtmxError, log_error
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
Route = tuple[str, str, Handler]
PREFIX = "/api/dtmsvr"
DEFAULT_PAGE = 100


def _error_response(request: Request, e: Exception) -> Response:
    if isinstance(e, DtmxError):
        log_error(log, e, "%s %s %d %s", request.method, request.path, e.http_status, e.message)
        return json_response(e.body(), e.http_status)
    log.error("%s %s 500 failed", request.method, request.path, exc_info=e)
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


def openapi_document() -> bytes:
    """The OpenAPI 3.1 document of these routes (dtmx/api/openapi.json in the package)."""
    return resources.files("dtmx.api").joinpath("openapi.json").read_bytes()


def _gid_from_body(body: Any) -> str:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return check_gid(body.get("gid"))


class HttpApi:
    """DTM's HTTP API (/api/dtmsvr/...) plus dtmx's own routes: parse, call the service, answer
    JSON.
    """
    def __init__(
        self,
        service: Service,
        metrics: Metrics,
        *,
        timeout_to_fail: float,
        guard: Guard | None = None,
        observer: ApiObserver | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.svc = service
        self.metrics = metrics
        self.observer = observer or ApiObserver(metrics)
        self.timeout_to_fail = timeout_to_fail
        self.guard = guard
        self.limits = limits or Limits()
        self.health: Callable[[], Awaitable[bool]] | None = None
        self._openapi: bytes | None = None
        self._json_rpc = JsonRpcApi(self)

    def routes(self) -> list[Route]:
        """(method, path, handler) of every route; a `{name}` last segment is a parameter."""
        p = PREFIX
        return [
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
            ("GET", "/api/openapi.json", self.openapi),
            ("POST", JSON_RPC_PATH, self.json_rpc),
        ]

    def server(self, limits: ServerLimits | None = None, *, json_rpc_only: bool = False
               ) -> HttpServer:
        """The HTTP server of these routes, holding at most `limits` per connection; with
        `json_rpc_only`, of the JSON-RPC route alone (the JsonRpcPort listener)."""
        table = Routes()
        routes = self.routes()
        if json_rpc_only:
            routes = [r for r in routes if r[1] == JSON_RPC_PATH]
        for method, path, fn in routes:
            handler = _wrap(fn)
            # every route behind the role it needs (security.roles), when a guard is given
            if self.guard:
                handler = self.guard.http(path, handler)
            # observed outside the guard: refused requests count and are logged too
            table.add(method, path, self.observer.http(method, path, handler))
        return HttpServer(table, error_response=_error_response,
                          limits=limits or ServerLimits())

    def _trans(self, body: Any, verb: Verb) -> Any:
        return check_trans(parse_trans_body(body), verb, self.limits)

    async def version(self, r: Request) -> Any:
        """GET version: this server's version."""
        return {"version": f"dtmx-{__version__}"}

    async def new_gid(self, r: Request) -> Any:
        """GET newGid: a fresh unique gid."""
        return {"gid": await self.svc.new_gid(), "dtm_result": "SUCCESS"}

    async def prepare(self, r: Request) -> Any:
        """POST prepare: store a msg/TCC/XA as prepared (idempotent for the same gid)."""
        await self.svc.prepare(self._trans(await _body(r), Verb.PREPARE))

    async def submit(self, r: Request) -> Any:
        """POST submit: store and start a transaction, or move a prepared one on."""
        await self.svc.submit(self._trans(await _body(r), Verb.SUBMIT))

    async def abort(self, r: Request) -> Any:
        """POST abort: roll back a prepared TCC/XA/msg."""
        await self.svc.abort(self._trans(await _body(r), Verb.ABORT))

    async def force_stop(self, r: Request) -> Any:
        """POST forceStop: fail an unfinished transaction now; 404/409 otherwise."""
        await self.svc.force_stop(_gid_from_body(await _body(r)))

    async def reset_next_cron_time(self, r: Request) -> Any:
        """POST resetNextCronTime: make one unfinished transaction due now."""
        await self.svc.reset_next_cron_time(_gid_from_body(await _body(r)))

    async def register_branch(self, r: Request) -> Any:
        """POST registerBranch (and its TCC/XA aliases): add a branch to a prepared transaction."""
        body = await _body(r)
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object of strings")
        await self.svc.register_branch(parse_registration(body))

    async def prepare_workflow(self, r: Request) -> Any:
        """POST prepareWorkflow: store a workflow (or find it) and answer it with its recorded
        progresses.
        """
        req = self._trans(await _body(r), Verb.PREPARE_WORKFLOW)
        trans, branches = await self.svc.prepare_workflow(req)
        # DTM answers its full rows; its Go client reads them as protojson of
        # DtmProgressesReply (unknown fields discarded): transaction.{gid, status,
        # rollback_reason, result}, progresses[].{branch_id, op, status, bin_data (base64)}
        return {"transaction": trans_json(trans), "progresses": [branch_json(b) for b in branches]}

    async def query(self, r: Request) -> Any:
        """GET query: one transaction, its branches and its call history (null when there is
        none)."""
        gid = r.query.get("gid", "")
        if not gid:
            raise BadRequest("no gid specified")
        return query_json(*await self.svc.query(check_gid(gid)))

    async def all(self, r: Request) -> Any:
        """GET all: transactions newest first, filtered and paged by an opaque position."""
        q = r.query
        status = q.get("status") or None
        try:
            status_filter = Status(status) if status else None
        except ValueError:
            allowed = "|".join(s.value for s in Status)
            raise BadRequest(f"unknown status {status!r}, expected one of {allowed}") from None
        filters = ScanFilter(
            status=status_filter,
            trans_type=parse_trans_type(q["transType"]) if q.get("transType") else None,
            create_time_start=_ms(q, "createTimeStart"),
            create_time_end=_ms(q, "createTimeEnd"),
            gid_prefix=q.get("gidPrefix", ""),
        )
        gid = q.get("gid", "")
        transactions, position = await self.svc.all(
            gid=check_gid(gid) if gid else "",
            position=query_position(q),
            limit=query_int(q, "limit", DEFAULT_PAGE),
            filters=filters,
        )
        return {"transactions": [trans_json(t) for t in transactions], "next_position": position}

    async def reset_cron_time(self, r: Request) -> Any:
        """GET resetCronTime: make transactions scheduled later than `timeout` seconds from now due
        now.
        """
        timeout = query_int(r.query, "timeout", reset_cron_after(self.timeout_to_fail))
        limit = query_int(r.query, "limit", DEFAULT_PAGE)
        count, remaining = await self.svc.reset_cron_time(timeout=timeout, limit=limit)
        return {"has_remaining": remaining, "succeed_count": count}

    async def subscribe(self, r: Request) -> Any:
        """GET subscribe: add a URL to a msg topic (409 if it is there)."""
        q = r.query
        topic, url = q.get("topic", ""), q.get("url", "")
        parse_topic(topic, url)
        await self.svc.subscribe(topic, url, q.get("remark", ""))

    async def unsubscribe(self, r: Request) -> Any:
        """GET unsubscribe: remove a URL from a topic (404 if it is not there)."""
        topic, url = r.query.get("topic", ""), r.query.get("url", "")
        parse_topic(topic, url)
        await self.svc.unsubscribe(topic, url)

    async def delete_topic(self, r: Request) -> Any:
        """DELETE topic/{name}: remove a topic (404 if there is none)."""
        topic = r.match_info.get("name", "")
        parse_topic(topic)
        await self.svc.delete_topic(topic)

    async def scan_kv(self, r: Request) -> Any:
        """GET scanKV: key-value records of a category, paged."""
        kvs, position = await self.svc.scan_kv(
            cat=r.query.get("cat", ""),
            position=query_position(r.query),
            limit=query_int(r.query, "limit", DEFAULT_PAGE),
        )
        return {"kv": [kv_json(k) for k in kvs], "next_position": position}

    async def query_kv(self, r: Request) -> Any:
        """GET queryKV: one key-value record (an empty list when there is none)."""
        kvs = await self.svc.query_kv(cat=r.query.get("cat", ""), key=r.query.get("key", ""))
        return {"kv": [kv_json(k) for k in kvs]}

    async def ping(self, r: Request) -> Any:
        """GET /api/ping: liveness, without authentication."""
        return {"msg": "pong"}

    async def healthz(self, r: Request) -> Any:
        """GET /api/healthz: 200 when the store answers, 503 otherwise."""
        ok = await self.health() if self.health else True
        return json_response({"healthy": ok}, 200 if ok else 503)

    async def prometheus(self, r: Request) -> Any:
        """GET /api/metrics: DTM's metric names and dtmx's own, Prometheus text."""
        return Response(await self.metrics.render(), content_type=PROMETHEUS_TEXT)

    async def json_rpc(self, r: Request) -> Any:
        """POST of DTM's JSON-RPC API, answered by the same service."""
        return await self._json_rpc.handle(r)

    async def openapi(self, r: Request) -> Any:
        """GET the OpenAPI description of the HTTP API."""
        if self._openapi is None:
            self._openapi = openapi_document()
        return Response(self._openapi)


def _ms(q: dict[str, str], name: str) -> float | None:
    if not q.get(name):
        return None
    return query_int(q, name, 0) / 1000.0
