"""The gRPC face of the server: DTM's `dtmgimp.Dtm` service over `dtmx.service.Service`.

Thin on purpose: each method turns the protobuf request into the same values the HTTP
routes produce, calls the service, and maps a `DtmxError` to its gRPC status in one place
(`_guard`). Validation lives in `dtmx.core.request`, shared with HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import grpc
import grpc.aio
import orjson
from google.protobuf import empty_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dtmx.api.proto import dtmgimp_pb2, dtmgimp_pb2_grpc
from dtmx.api.serialize import query_json
from dtmx.core.models import Branch, Protocol, Transaction, TransOptions
from dtmx.core.request import TransRequest, check_gid, parse_trans_type
from dtmx.errors import BadRequest, ConfigError, DtmxError
from dtmx.service import Service

log = logging.getLogger(__name__)

T = TypeVar("T")
Context: TypeAlias = grpc.aio.ServicerContext

SERVICE_NAME = dtmgimp_pb2.DESCRIPTOR.services_by_name["Dtm"].full_name  # "dtmgimp.Dtm"
_INTERNAL_MESSAGE = "internal server error"


def _non_negative(name: str, v: int) -> int:
    if v < 0:
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(v)


def _parse_steps(text: str) -> list[dict[str, str]]:
    """Steps arrive as JSON text; Go clients send "null" for no steps."""
    if not text:
        return []
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadRequest("Steps must be JSON text of a list of objects") from None
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadRequest("Steps must be a JSON list")
    steps: list[dict[str, str]] = []
    for i, s in enumerate(raw):
        if not isinstance(s, dict) or not all(
            isinstance(x, str) or x is None for x in s.values()
        ):
            raise BadRequest(f"Steps[{i}] must be an object of strings")
        steps.append({k: x for k, x in s.items() if x is not None})
    return steps


def trans_request_from_grpc(req: dtmgimp_pb2.DtmRequest) -> TransRequest:
    """Build and validate a `TransRequest` from a `DtmRequest`, as DTM's gRPC API does.

    The protocol is always gRPC: branch URLs of a transaction submitted over gRPC are gRPC
    method URLs unless they say http(s)://.
    """
    gid = check_gid(req.Gid)
    trans_type = parse_trans_type(req.TransType)
    o = req.TransOptions  # an unset sub-message reads as all defaults
    options = TransOptions(
        wait_result=o.WaitResult,
        timeout_to_fail=_non_negative("TimeoutToFail", o.TimeoutToFail),
        request_timeout=_non_negative("RequestTimeout", o.RequestTimeout),
        retry_interval=_non_negative("RetryInterval", o.RetryInterval),
        retry_limit=_non_negative("RetryLimit", o.RetryLimit),
        branch_headers=dict(o.BranchHeaders),
    )
    return TransRequest(
        gid=gid,
        trans_type=trans_type,
        steps=_parse_steps(req.Steps),
        payloads=list(req.BinPayloads),
        custom_data=req.CustomedData,
        query_prepared=req.QueryPrepared,
        protocol=Protocol.GRPC,
        options=options,
        rollback_reason=req.RollbackReason,
        req_extra=dict(req.ReqExtra),
    )


def branch_map_from_grpc(req: dtmgimp_pb2.DtmBranchRequest) -> dict[str, Any]:
    """The registerBranch map the HTTP route receives, from a `DtmBranchRequest`.

    `Data` holds the per-type entries (confirm/cancel, url, op/status); the payload stays
    bytes (gRPC payloads are serialized protobuf, not text).
    """
    check_gid(req.Gid)
    parse_trans_type(req.TransType)
    out: dict[str, Any] = dict(req.Data)
    if req.Op and "op" not in out:
        out["op"] = req.Op
    out.update(gid=req.Gid, trans_type=req.TransType, branch_id=req.BranchID,
               data=bytes(req.BusiPayload))
    return out


def progresses_reply(
    trans: Transaction, branches: list[Branch]
) -> dtmgimp_pb2.DtmProgressesReply:
    """A workflow's recorded progress, for a resumed run."""
    return dtmgimp_pb2.DtmProgressesReply(
        Transaction=dtmgimp_pb2.DtmTransaction(
            Gid=trans.gid,
            Status=trans.status.value,
            RollbackReason=trans.rollback_reason,
            Result=trans.result,
        ),
        Progresses=[
            dtmgimp_pb2.DtmProgress(
                Status=b.status.value, BinData=b.data, BranchID=b.branch_id, Op=b.op.value
            )
            for b in branches
        ],
    )


async def _guard(context: Context, fn: Callable[[], Awaitable[T]]) -> T:
    """Run `fn`, turning our errors into the matching gRPC status (the one mapping place)."""
    try:
        return await fn()
    except DtmxError as e:
        code, message = grpc.StatusCode[e.grpc_code], e.message
    except NotImplementedError:
        code, message = grpc.StatusCode.UNIMPLEMENTED, "not implemented by this server"
    except Exception:
        log.exception("grpc call failed")
        code, message = grpc.StatusCode.INTERNAL, _INTERNAL_MESSAGE
    # outside the except blocks: abort raises, and must not be caught above
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


class DtmServicer(dtmgimp_pb2_grpc.DtmServicer):
    """`dtmgimp.Dtm` over a `Service`."""

    def __init__(self, service: Service) -> None:
        self._service = service

    async def NewGid(self, request: empty_pb2.Empty, context: Context) -> dtmgimp_pb2.DtmGidReply:
        gid = await _guard(context, self._service.new_gid)
        return dtmgimp_pb2.DtmGidReply(Gid=gid)

    async def _trans(
        self,
        request: dtmgimp_pb2.DtmRequest,
        context: Context,
        verb: Callable[[TransRequest], Awaitable[None]],
    ) -> empty_pb2.Empty:
        async def run() -> None:
            await verb(trans_request_from_grpc(request))

        await _guard(context, run)
        return empty_pb2.Empty()

    async def Submit(self, request: dtmgimp_pb2.DtmRequest, context: Context) -> empty_pb2.Empty:
        return await self._trans(request, context, self._service.submit)

    async def Prepare(self, request: dtmgimp_pb2.DtmRequest, context: Context) -> empty_pb2.Empty:
        return await self._trans(request, context, self._service.prepare)

    async def Abort(self, request: dtmgimp_pb2.DtmRequest, context: Context) -> empty_pb2.Empty:
        return await self._trans(request, context, self._service.abort)

    async def RegisterBranch(
        self, request: dtmgimp_pb2.DtmBranchRequest, context: Context
    ) -> empty_pb2.Empty:
        async def run() -> None:
            await self._service.register_branch(branch_map_from_grpc(request))

        await _guard(context, run)
        return empty_pb2.Empty()

    async def PrepareWorkflow(
        self, request: dtmgimp_pb2.DtmRequest, context: Context
    ) -> dtmgimp_pb2.DtmProgressesReply:
        async def run() -> dtmgimp_pb2.DtmProgressesReply:
            trans, branches = await self._service.prepare_workflow(
                trans_request_from_grpc(request)
            )
            return progresses_reply(trans, branches)

        return await _guard(context, run)

    async def Subscribe(
        self, request: dtmgimp_pb2.DtmTopicRequest, context: Context
    ) -> empty_pb2.Empty:
        async def run() -> None:
            await self._service.subscribe(request.Topic, request.URL, request.Remark)

        await _guard(context, run)
        return empty_pb2.Empty()

    async def Unsubscribe(
        self, request: dtmgimp_pb2.DtmTopicRequest, context: Context
    ) -> empty_pb2.Empty:
        async def run() -> None:
            await self._service.unsubscribe(request.Topic, request.URL)

        await _guard(context, run)
        return empty_pb2.Empty()

    async def Query(
        self, request: dtmgimp_pb2.DtmQueryRequest, context: Context
    ) -> dtmgimp_pb2.DtmQueryReply:
        """dtmx's addition to DTM's API: the JSON text GET query answers."""

        async def run() -> dtmgimp_pb2.DtmQueryReply:
            answer = query_json(*await self._service.query(request.Gid))
            return dtmgimp_pb2.DtmQueryReply(Json=orjson.dumps(answer).decode())

        return await _guard(context, run)

    async def DeleteTopic(
        self, request: dtmgimp_pb2.DtmTopicRequest, context: Context
    ) -> empty_pb2.Empty:
        async def run() -> None:
            await self._service.delete_topic(request.Topic)

        await _guard(context, run)
        return empty_pb2.Empty()


async def start_grpc_server(
    service: Service,
    host: str,
    port: int,
    *,
    options: Mapping[str, Any] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> grpc.aio.Server:
    """Serve `dtmgimp.Dtm`, health (SERVING) and reflection on host:port; return the server.

    Stop it with `await server.stop(grace)`. Raises `ConfigError` if the address cannot
    be bound.
    """
    # grpc turns SO_REUSEPORT on by default, which would let a second server (or a stale
    # one) share the port silently; a taken port must be an error instead.
    opts: dict[str, Any] = {"grpc.so_reuseport": 0}
    opts.update(options or {})
    server = grpc.aio.server(options=tuple(opts.items()), interceptors=tuple(interceptors))
    dtmgimp_pb2_grpc.add_DtmServicer_to_server(  # type: ignore[no-untyped-call]
        DtmServicer(service), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_name, reflection.SERVICE_NAME), server
    )
    address = f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise ConfigError(f"cannot listen for gRPC on {address}: {e}") from None
    if not bound:
        raise ConfigError(f"cannot listen for gRPC on {address}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server

