"""What both rpc services share: the handler wrapper, the barrier, and the server's lifetime.

`rpc_method` wraps a servicer method: it continues the caller's trace, tags the logs with the
gid, and turns outcomes into gRPC statuses once (DTM's rule for branches: `Failure` is
ABORTED, roll back; anything unexpected is INTERNAL, which dtmx retries).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio
from opentelemetry import trace

from dtmx.client import Failure
from dtmx.client.barrier import BranchBarrier
from dtmx.client.grpc import branch_info_from_grpc_metadata, grpc_status_for
from mall.common.db import Database
from mall.common.telemetry import current_gid, server_span

log = logging.getLogger("mall.rpc")

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class RpcError(Exception):
    """A business answer other than OK that is not a transaction outcome (bad id, not found)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class HasTracer(Protocol):
    """A servicer with a tracer (the wrapper's `self`)."""

    tracer: trace.Tracer


Method = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def metadata_of(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """Invocation metadata as a dict (first value of a key wins; binary values skipped)."""
    out: dict[str, str] = {}
    for k, v in context.invocation_metadata() or ():
        if isinstance(v, str):
            out.setdefault(k, v)
    return out


def _status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, RpcError):
        return exc.code, exc.message
    code, message = grpc_status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("unexpected error", exc_info=exc)
    return code, message


def rpc_method(fn: Method[Req, Resp]) -> Method[Req, Resp]:
    """Trace, log context and status mapping around one servicer method."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: HasTracer, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        md = metadata_of(context)
        token = current_gid.set(md.get("dtm-gid", "-"))
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            with server_span(self.tracer, name, md) as span:
                if "dtm-gid" in md:
                    span.set_attribute("dtm.gid", md["dtm-gid"])
                    span.set_attribute("dtm.branch_id", md.get("dtm-branch_id", ""))
                    span.set_attribute("dtm.op", md.get("dtm-op", ""))
                try:
                    result = await fn(self, request, context)
                    log.info("%s ok", name)
                    return result
                except Exception as e:
                    failure = _status(e)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, failure[1]))
                    log.info("%s -> %s %s", name, failure[0].name, failure[1])
        finally:
            current_gid.reset(token)
        await context.abort(failure[0], failure[1])
        raise AssertionError("abort returned")  # pragma: no cover - abort always raises

    return wrapper


def barrier_of(context: grpc.aio.ServicerContext, db: Database) -> BranchBarrier:
    """The barrier of the branch call in `context` (dtm-* metadata), on `db`'s table.

    A call without branch metadata is not part of a transaction: INVALID_ARGUMENT.
    """
    try:
        info = branch_info_from_grpc_metadata(context)
    except ValueError as e:
        raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
    return BranchBarrier(
        trans_type=str(info.trans_type),
        gid=info.gid,
        branch_id=info.branch_id,
        op=str(info.op),
        table=db.barrier_table,
    )


__all__ = ["Failure", "RpcError", "barrier_of", "metadata_of", "rpc_method"]
