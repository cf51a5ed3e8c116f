"""The gRPC side of the guard: an interceptor checking the `authorization` metadata.

Health and reflection stay open (`roles.GRPC_OPEN_SERVICES`); `dtmgimp.Dtm` methods need
the role of `roles.GRPC_ROLES`; operator methods are written to the audit log with the
status they ended with.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from dtmx.errors import DtmxError
from dtmx.security.auth import Principal, _current, require
from dtmx.security.guard import Guard
from dtmx.security.roles import AUDITED, grpc_role

log = logging.getLogger("dtmx.auth")


def _deny(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(deny)


def _grpc_target(request: Any) -> dict[str, str]:
    topic = getattr(request, "Topic", None)
    url = getattr(request, "URL", None)
    out = {"topic": topic} if isinstance(topic, str) else {}
    if isinstance(url, str) and url:
        out["url"] = url
    return out


class GrpcGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc has no types
    """Checks the `authorization` metadata of each call against the method's role."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Authenticate and authorise the call by its method's role, audit operator actions, or
        refuse it.
        """
        method = details.method
        name = method.rsplit("/", 1)[-1]
        audited = name in AUDITED and method.startswith("/dtmgimp.Dtm/")
        auth = self.guard.auth
        if not auth.enabled and not audited:
            return await continuation(details)
        metadata = {m.key: m.value for m in details.invocation_metadata or ()}
        value = metadata.get("authorization")
        role = grpc_role(method)
        who: Principal | None = None
        try:
            if role is None:
                p = auth.authorize(None, None)
            else:
                p = who = auth.authenticate(value if isinstance(value, str) else None)
                require(p, role)
        except DtmxError as e:
            log.info("refused gRPC %s: %s", method, e.grpc_code)
            if audited:
                self.guard.audit(who, name, "grpc", {}, f"{e.grpc_code} {e.message}")
            return _deny(grpc.StatusCode[e.grpc_code], e.message)
        handler = await continuation(details)
        inner = handler.unary_unary if handler is not None else None
        if inner is None:
            return handler
        guard = self.guard

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            reset = _current.set(p)
            failed = True
            try:
                out = await inner(request, context)
                failed = False
                return out
            finally:
                _current.reset(reset)
                if audited:
                    guard.audit(p, name, "grpc", _grpc_target(request), _grpc_outcome(
                        context, failed))

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _grpc_outcome(context: grpc.aio.ServicerContext, failed: bool) -> str:
    """The servicer aborts with our error's status; read it back for the audit line."""
    if not failed:
        return "ok"
    code = context.code()
    name = code.name if isinstance(code, grpc.StatusCode) else str(code or "UNKNOWN")
    return f"{name} {context.details() or ''}".strip()
