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
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dtmx.api.proto import dtmgimp_pb2, dtmgimp_pb2_grpc
from dtmx.api.serialize import query_json
from dtmx.core.limits import Limits
from dtmx.core.models import Branch, Protocol, Transaction
from dtmx.core.request import (
    Registration,
    TransRequest,
    Verb,
    check_gid,
    check_trans,
    options_from_numbers,
    parse_registration,
    parse_steps,
    parse_topic,
    parse_trans_type,
)
from dtmx.errors import BadRequest, ConfigError, DeadlineExpired, DtmxError, log_error
from dtmx.service import Service

log = logging.getLogger(__name__)

T = TypeVar("T")
Context: TypeAlias = grpc.aio.ServicerContext

SERVICE_NAME = dtmgimp_pb2.DESCRIPTOR.services_by_name["Dtm"].full_name  # "dtmgimp.Dtm"
_INTERNAL_MESSAGE = "internal server error"


class Malformed:
    """What a request that is not a valid protobuf message of its type deserializes to, so
    the call is answered INVALID_ARGUMENT by `_guard` (grpc's own answer would be UNKNOWN,
    naming a Python class)."""

    def __init__(self, type_name: str) -> None:
        self.message = f"the request is not a valid {type_name} protobuf message"


def _lenient(cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError:
            return Malformed(cls.DESCRIPTOR.full_name)

    return parse


def trans_request_from_grpc(req: dtmgimp_pb2.DtmRequest) -> TransRequest:
    """Build a `TransRequest` from a `DtmRequest`, with the same rules as HTTP (types and
    ranges; `check_trans` checks the rest).

    The protocol is always gRPC: branch URLs of a transaction submitted over gRPC are gRPC
    method URLs unless they say http(s)://. Steps arrive as JSON text ("null" for none).
    """
    gid = check_gid(req.Gid)
    trans_type = parse_trans_type(req.TransType)
    o = req.TransOptions  # an unset sub-message reads as all defaults
    options = options_from_numbers(
        wait_result=o.WaitResult, timeout_to_fail=o.TimeoutToFail,
        request_timeout=o.RequestTimeout, retry_interval=o.RetryInterval,
        retry_limit=o.RetryLimit, branch_headers=o.BranchHeaders,
    )
    raw_steps: Any = None
    if req.Steps:
        try:
            raw_steps = orjson.loads(req.Steps)
        except orjson.JSONDecodeError:
            raise BadRequest("Steps must be JSON text of a list of objects") from None
    steps, _ = parse_steps(raw_steps, "Steps")
    return TransRequest(
        gid=gid,
        trans_type=trans_type,
        steps=steps,
        payloads=list(req.BinPayloads),
        custom_data=req.CustomedData,
        query_prepared=req.QueryPrepared,
        protocol=Protocol.GRPC,
        options=options,
        rollback_reason=req.RollbackReason,
        req_extra=dict(req.ReqExtra),
    )


def registration_from_grpc(req: dtmgimp_pb2.DtmBranchRequest) -> Registration:
    """The registration the HTTP route builds, from a `DtmBranchRequest`.

    `Data` holds the per-type entries (confirm/cancel, url, op/status); the payload stays
    bytes (gRPC payloads are serialized protobuf, not text).
    """
    out: dict[str, Any] = dict(req.Data)
    if req.Op and "op" not in out:
        out["op"] = req.Op
    out.update(gid=req.Gid, trans_type=req.TransType, branch_id=req.BranchID,
               data=bytes(req.BusiPayload))
    return parse_registration(out)


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


async def _guard(
    context: Context, method: str, request: Any, fn: Callable[[], Awaitable[T]]
) -> T:
    """Run `fn`, turning our errors into the matching gRPC status (the one mapping place).

    Client errors are one log line (method, code, reason); a server fault logs its
    traceback and tells the client only "internal server error".
    """
    try:
        if isinstance(request, Malformed):
            raise BadRequest(request.message)
        return await fn()
    except DtmxError as e:
        code, message = grpc.StatusCode[e.grpc_code], e.message
        log_error(log, e, "grpc %s %s %s", method, code.name, message)
    except NotImplementedError:
        code, message = grpc.StatusCode.UNIMPLEMENTED, "not implemented by this server"
    except Exception:
        log.exception("grpc %s failed", method)
        code, message = grpc.StatusCode.INTERNAL, _INTERNAL_MESSAGE
    # outside the except blocks: abort raises, and must not be caught above
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


def _before_write(context: Context) -> None:
    """Refuse a call whose deadline has already passed, before anything is stored.

    One that expires during the store write may still be stored; its state is then the one
    a retry of the same call produces (prepare and submit are idempotent on a gid; a
    retried registerBranch answers ABORTED "already registered").
    """
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExpired()


class DtmServicer(dtmgimp_pb2_grpc.DtmServicer):
    """`dtmgimp.Dtm` over a `Service`."""

    def __init__(self, service: Service, limits: Limits | None = None) -> None:
        self._service = service
        self._limits = limits or Limits()

    async def NewGid(self, request: empty_pb2.Empty, context: Context) -> dtmgimp_pb2.DtmGidReply:
        """A fresh unique gid."""
        gid = await _guard(context, "NewGid", request, self._service.new_gid)
        return dtmgimp_pb2.DtmGidReply(Gid=gid)

    async def _trans(
        self,
        request: dtmgimp_pb2.DtmRequest,
        context: Context,
        verb: Verb,
        do: Callable[[TransRequest], Awaitable[None]],
    ) -> empty_pb2.Empty:
        async def run() -> None:
            req = check_trans(trans_request_from_grpc(request), verb, self._limits)
            _before_write(context)
            await do(req)

        await _guard(context, verb.value.capitalize(), request, run)
        return empty_pb2.Empty()

    async def Submit(self, request: dtmgimp_pb2.DtmRequest, context: Context) -> empty_pb2.Empty:
        """Store and start a transaction, or move a prepared one on."""
        return await self._trans(request, context, Verb.SUBMIT, self._service.submit)

    async def Prepare(self, request: dtmgimp_pb2.DtmRequest, context: Context) -> empty_pb2.Empty:
        """Store a msg/TCC/XA as prepared (idempotent for the same gid)."""
        return await self._trans(request, context, Verb.PREPARE, self._service.prepare)

    async def Abort(self, request: dtmgimp_pb2.DtmRequest, context: Context) -> empty_pb2.Empty:
        """Roll back a prepared TCC/XA/msg."""
        return await self._trans(request, context, Verb.ABORT, self._service.abort)

    async def RegisterBranch(
        self, request: dtmgimp_pb2.DtmBranchRequest, context: Context
    ) -> empty_pb2.Empty:
        """Add a branch to a prepared transaction (DtmBranchRequest's map, as over HTTP)."""
        async def run() -> None:
            reg = registration_from_grpc(request)
            _before_write(context)
            await self._service.register_branch(reg)

        await _guard(context, "RegisterBranch", request, run)
        return empty_pb2.Empty()

    async def PrepareWorkflow(
        self, request: dtmgimp_pb2.DtmRequest, context: Context
    ) -> dtmgimp_pb2.DtmProgressesReply:
        """Store a workflow (or find it) and answer it with its recorded progresses."""
        async def run() -> dtmgimp_pb2.DtmProgressesReply:
            req = check_trans(trans_request_from_grpc(request), Verb.PREPARE_WORKFLOW,
                              self._limits)
            _before_write(context)
            trans, branches = await self._service.prepare_workflow(req)
            return progresses_reply(trans, branches)

        return await _guard(context, "PrepareWorkflow", request, run)

    async def _topic(
        self, method: str, request: dtmgimp_pb2.DtmTopicRequest, context: Context,
        do: Callable[[dtmgimp_pb2.DtmTopicRequest], Awaitable[None]], with_url: bool = True,
    ) -> empty_pb2.Empty:
        async def run() -> None:
            parse_topic(request.Topic, request.URL if with_url else None)
            await do(request)

        await _guard(context, method, request, run)
        return empty_pb2.Empty()

    async def Subscribe(
        self, request: dtmgimp_pb2.DtmTopicRequest, context: Context
    ) -> empty_pb2.Empty:
        """Add a URL to a msg topic (ABORTED if it is there)."""
        return await self._topic("Subscribe", request, context, lambda r: self._service.subscribe(
            r.Topic, r.URL, r.Remark))

    async def Unsubscribe(
        self, request: dtmgimp_pb2.DtmTopicRequest, context: Context
    ) -> empty_pb2.Empty:
        """Remove a URL from a topic (NOT_FOUND if it is not there)."""
        return await self._topic("Unsubscribe", request, context,
                                 lambda r: self._service.unsubscribe(r.Topic, r.URL))

    async def Query(
        self, request: dtmgimp_pb2.DtmQueryRequest, context: Context
    ) -> dtmgimp_pb2.DtmQueryReply:
        """dtmx's addition to DTM's API: the JSON text GET query answers."""

        async def run() -> dtmgimp_pb2.DtmQueryReply:
            answer = query_json(*await self._service.query(check_gid(request.Gid)))
            return dtmgimp_pb2.DtmQueryReply(Json=orjson.dumps(answer).decode())

        return await _guard(context, "Query", request, run)

    async def DeleteTopic(
        self, request: dtmgimp_pb2.DtmTopicRequest, context: Context
    ) -> empty_pb2.Empty:
        """Remove a topic (NOT_FOUND if there is none)."""
        return await self._topic("DeleteTopic", request, context,
                                 lambda r: self._service.delete_topic(r.Topic), with_url=False)


#: Request and response types of each method, for handlers whose deserializer never raises.
_METHODS: dict[str, tuple[Any, Any]] = {
    "NewGid": (empty_pb2.Empty, dtmgimp_pb2.DtmGidReply),
    "Submit": (dtmgimp_pb2.DtmRequest, empty_pb2.Empty),
    "Prepare": (dtmgimp_pb2.DtmRequest, empty_pb2.Empty),
    "Abort": (dtmgimp_pb2.DtmRequest, empty_pb2.Empty),
    "RegisterBranch": (dtmgimp_pb2.DtmBranchRequest, empty_pb2.Empty),
    "PrepareWorkflow": (dtmgimp_pb2.DtmRequest, dtmgimp_pb2.DtmProgressesReply),
    "Subscribe": (dtmgimp_pb2.DtmTopicRequest, empty_pb2.Empty),
    "Unsubscribe": (dtmgimp_pb2.DtmTopicRequest, empty_pb2.Empty),
    "DeleteTopic": (dtmgimp_pb2.DtmTopicRequest, empty_pb2.Empty),
    "Query": (dtmgimp_pb2.DtmQueryRequest, dtmgimp_pb2.DtmQueryReply),
}


def add_servicer(servicer: DtmServicer, server: grpc.aio.Server) -> None:
    """Register `servicer` like the generated `add_DtmServicer_to_server`, except that a
    malformed request reaches it as `Malformed` (answered INVALID_ARGUMENT)."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=_lenient(req_cls),
            response_serializer=resp_cls.SerializeToString,
        )
        for name, (req_cls, resp_cls) in _METHODS.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


async def start_grpc_server(
    service: Service,
    host: str,
    port: int,
    *,
    options: Mapping[str, Any] | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    limits: Limits | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> grpc.aio.Server:
    """Serve `dtmgimp.Dtm`, health (SERVING) and reflection on host:port; return the server.

    Stop it with `await server.stop(grace)`. Raises `ConfigError` if the address cannot
    be bound.
    """
    # grpc turns SO_REUSEPORT on by default, which would let a second server (or a stale
    # one) share the port silently; a taken port must be an error instead.
    opts: dict[str, Any] = {"grpc.so_reuseport": 0}
    # a request is bounded by Limits.MaxBodyBytes as over HTTP (gRPC's default is 4 MiB);
    # larger is RESOURCE_EXHAUSTED "Received message larger than max", as from DTM's server.
    # Replies are not capped: they are small, and a workflow's recorded steps (the largest)
    # were each accepted within the limits.
    opts["grpc.max_receive_message_length"] = (limits or Limits()).MaxBodyBytes
    opts.update(options or {})
    server = grpc.aio.server(options=tuple(opts.items()), interceptors=tuple(interceptors))
    add_servicer(DtmServicer(service, limits), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_name, reflection.SERVICE_NAME), server
    )
    address = f"{host}:{port}"
    try:
        bound = (server.add_secure_port(address, credentials) if credentials is not None
                 else server.add_insecure_port(address))
    except RuntimeError as e:
        raise ConfigError(f"cannot listen for gRPC on {address}: {e}") from None
    if not bound:
        raise ConfigError(f"cannot listen for gRPC on {address}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server

