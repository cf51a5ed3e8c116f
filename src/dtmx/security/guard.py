"""The checks in front of the API: a wrapper per HTTP route (the gRPC interceptor, in
`grpc_guard`, does the same per method).

Each request's token is checked against the role its route needs (`roles`), the caller is
set for `auth.current_principal()` while the handler runs, and operator actions are written to
the audit log with their outcome. Refusals are `Unauthorized`/`Forbidden`, mapped like every
other `DtmxError` (401/403, gRPC UNAUTHENTICATED/PERMISSION_DENIED).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from dtmx.errors import DtmxError
from dtmx.net.api_server import Request, Response
from dtmx.security import audit
from dtmx.security.auth import Authenticator, Principal, _current, require
from dtmx.security.roles import AUDITED, Role, http_role, http_route_name

log = logging.getLogger("dtmx.auth")

HttpHandler = Callable[[Request], Awaitable[Response]]


def _http_target(name: str, r: Request) -> dict[str, str]:
    """What an audited HTTP call acted on: the gid, topic, url or query limits."""
    if name in ("forceStop", "resetNextCronTime"):
        try:
            body = orjson.loads(r.body) if r.body else None
        except orjson.JSONDecodeError:
            body = None
        gid = body.get("gid") if isinstance(body, dict) else None
        return {"gid": gid if isinstance(gid, str) else ""}
    if name == "topic":
        return {"topic": r.match_info.get("name", "")}
    keys = ("topic", "url") if name in ("subscribe", "unsubscribe") else ("timeout", "limit")
    return {k: r.query[k] for k in keys if k in r.query}


def _outcome(e: BaseException | None) -> str:
    if e is None:
        return "ok"
    if isinstance(e, DtmxError):
        return f"{e.http_status} {e.message}"
    return "error"


class Guard:
    """Authentication, authorization and the audit trail for one server.

    `clock` gives epoch seconds for the audit lines (the server's injected clock)."""

    def __init__(self, auth: Authenticator, clock: Callable[[], float]) -> None:
        self.auth = auth
        self.clock = clock

    def audit(self, p: Principal | None, action: str, via: str, target: dict[str, str],
              outcome: str) -> None:
        """One audit line for `action` by `p` (None: the caller could not be identified)."""
        audit.record(
            action=action, who=p.name if p else "unidentified",
            role=p.role.label if p else "", via=via, target=target,
            outcome=outcome, at=self.clock(),
        )

    def http(self, path: str, handler: HttpHandler, need: Role | None = None) -> HttpHandler:
        """`handler` behind the check of the role that `path` needs (`need` overrides the
        table, for routes it does not list, e.g. the admin UI's)."""
        name = http_route_name(path)
        role = need if need is not None else http_role(path)
        audited = name in AUDITED
        if not self.auth.enabled and not audited:
            return handler  # open, as in DTM: nothing to check, nothing to record
        auth = self.auth

        async def guarded(request: Request) -> Response:
            who: Principal | None = None
            try:
                if role is None:
                    p = auth.authorize(None, None)
                else:
                    p = who = auth.authenticate(request.headers.get("authorization"))
                    require(p, role)
            except DtmxError as e:
                log.info("refused %s %s: %s", request.method, request.path, e.http_status)
                if audited:
                    self.audit(who, name, "http", _http_target(name, request), _outcome(e))
                raise
            reset = _current.set(p)
            error: BaseException | None = None
            try:
                return await handler(request)
            except Exception as e:
                error = e
                raise
            finally:
                _current.reset(reset)
                if audited:
                    self.audit(p, name, "http", _http_target(name, request), _outcome(error))

        return guarded

    def grpc_interceptor(self) -> Any:
        """The interceptor to pass to `grpc.aio.server(interceptors=...)` (a
        `grpc.aio.ServerInterceptor`; imported here because grpcio is optional)."""
        from dtmx.security.grpc_guard import GrpcGuard

        return GrpcGuard(self)
