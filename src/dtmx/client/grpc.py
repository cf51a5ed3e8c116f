"""The SDK over gRPC: a `Transport` speaking `dtmgimp.Dtm`, and branch-side helpers.

Needs grpcio and protobuf (not aiohttp-only like the rest of the SDK) and imports only the
generated `dtmx.proto` stubs (shared with the server), never the server itself.

    client = DtmClient("http://dtm:36789/api/dtmsvr", transport=GrpcTransport("dtm:36790"))

Bodies arrive in DTM's JSON shape (what `to_body()` builds) and are converted to a
`DtmRequest` here. gRPC statuses become the SDK's errors once, in `error_from_rpc`:
ABORTED is `Failure`, FAILED_PRECONDITION is `Ongoing`, anything else a plain `DtmError`.
DTM's gRPC API has no query call, so `query` needs `http_server` (the HTTP base URL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, TypeAlias

import grpc
import grpc.aio
import orjson
from google.protobuf import empty_pb2

from dtmx.client.branch import BranchInfo
from dtmx.client.consts import DtmResult
from dtmx.client.errors import DtmError, Failure, Ongoing
from dtmx.client.http_transport import HttpTransport
from dtmx.proto import dtmgimp_pb2, dtmgimp_pb2_grpc

ServicerContext: TypeAlias = grpc.aio.ServicerContext

# The keys of a registerBranch map that have their own DtmBranchRequest field.
_BRANCH_FIELDS = ("gid", "trans_type", "branch_id", "data")


def error_from_rpc(e: grpc.aio.AioRpcError) -> DtmError:
    """The SDK error a gRPC status stands for."""
    code, message = e.code(), e.details() or ""
    if code == grpc.StatusCode.ABORTED:
        # servers and branches before DTM 1.10 said "ongoing" as ABORTED "ONGOING"
        if message == DtmResult.ONGOING:
            return Ongoing(message)
        return Failure(message or None)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return Ongoing(message or None)
    return DtmError(f"{code.name}: {message}" if message else code.name)


def _bytes(v: Any) -> bytes:
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    if isinstance(v, str):
        return v.encode()
    raise TypeError(f"payload must be str or bytes, not {type(v).__name__}")


def _int(body: Mapping[str, Any], key: str) -> int:
    return int(body.get(key) or 0)


def dtm_request(body: Mapping[str, Any]) -> dtmgimp_pb2.DtmRequest:
    """A `DtmRequest` from a prepare/submit/abort body in DTM's JSON shape.

    Payloads may be text (JSON, as HTTP clients send) or bytes (serialized protobuf, what
    gRPC branches expect). `concurrent` and `passthrough_headers` have no gRPC field.
    """
    steps = body.get("steps")
    return dtmgimp_pb2.DtmRequest(
        Gid=body.get("gid") or "",
        TransType=body.get("trans_type") or "",
        TransOptions=dtmgimp_pb2.DtmTransOptions(
            WaitResult=bool(body.get("wait_result")),
            TimeoutToFail=_int(body, "timeout_to_fail"),
            RetryInterval=_int(body, "retry_interval"),
            BranchHeaders=dict(body.get("branch_headers") or {}),
            RequestTimeout=_int(body, "request_timeout"),
            RetryLimit=_int(body, "retry_limit"),
        ),
        CustomedData=body.get("custom_data") or "",
        BinPayloads=[_bytes(p) for p in body.get("payloads") or ()],
        QueryPrepared=body.get("query_prepared") or "",
        Steps=orjson.dumps(list(steps)).decode() if steps else "",
        ReqExtra=dict(body.get("req_extra") or {}),
        RollbackReason=body.get("rollback_reason") or "",
    )


def dtm_branch_request(body: Mapping[str, Any]) -> dtmgimp_pb2.DtmBranchRequest:
    """A `DtmBranchRequest` from a registerBranch map (gid, trans_type, branch_id, data...).

    Every other entry (confirm/cancel, url, op/status) goes into `Data`, as DTM's gRPC
    clients send it.
    """
    return dtmgimp_pb2.DtmBranchRequest(
        Gid=body.get("gid") or "",
        TransType=body.get("trans_type") or "",
        BranchID=body.get("branch_id") or "",
        Op=body.get("op") or "",
        Data={k: str(v) for k, v in body.items() if k not in _BRANCH_FIELDS and v is not None},
        BusiPayload=_bytes(body.get("data") or b""),
    )


class GrpcTransport:
    """The `Transport` over DTM's gRPC API at `server` ("host:port").

    The channel is opened lazily in the running loop (a grpc.aio channel belongs to the loop
    that made it) and reused. `timeout` bounds each call, in seconds.
    """

    def __init__(
        self, server: str, *, http_server: str | None = None, timeout: float = 10.0
    ) -> None:
        self.server = server
        self.timeout = timeout
        self._http = HttpTransport(http_server) if http_server else None
        self._channel: grpc.aio.Channel | None = None
        self._stub: dtmgimp_pb2_grpc.DtmStub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def stub(self) -> dtmgimp_pb2_grpc.DtmStub:
        """The `dtmgimp.Dtm` stub of the running loop, created on first use."""
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            self._channel = grpc.aio.insecure_channel(self.server)
            self._stub = dtmgimp_pb2_grpc.DtmStub(self._channel)  # type: ignore[no-untyped-call]
            self._loop = loop
        return self._stub

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self.stub(), method)(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise error_from_rpc(e) from None

    async def new_gid(self) -> str:
        """A fresh gid from NewGid."""
        reply = await self._call("NewGid", empty_pb2.Empty())
        if not reply.Gid:
            raise DtmError("NewGid returned no gid")
        return str(reply.Gid)

    async def prepare(self, body: Mapping[str, Any]) -> None:
        """Prepare."""
        await self._call("Prepare", dtm_request(body))

    async def submit(self, body: Mapping[str, Any]) -> None:
        """Submit."""
        await self._call("Submit", dtm_request(body))

    async def abort(self, body: Mapping[str, Any]) -> None:
        """Abort."""
        await self._call("Abort", dtm_request(body))

    async def register_branch(self, body: Mapping[str, str]) -> None:
        """RegisterBranch."""
        await self._call("RegisterBranch", dtm_branch_request(body))

    async def query(self, gid: str) -> dict[str, Any]:
        """Query over HTTP: DTM's gRPC API has no such call."""
        if self._http is None:
            raise DtmError("query is not part of DTM's gRPC API: give GrpcTransport http_server")
        return await self._http.query(gid)

    async def close(self) -> None:
        """Close the channel (a new one opens on the next call)."""
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None and self._loop is asyncio.get_running_loop():
            await channel.close()
        if self._http is not None:
            await self._http.close()


# --- branch side -------------------------------------------------------------------------


def _metadata(context: ServicerContext) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in context.invocation_metadata() or ():
        out.setdefault(k, v.decode() if isinstance(v, bytes) else v)  # first value wins
    return out


def branch_info_from_grpc_metadata(context: ServicerContext) -> BranchInfo:
    """Which branch a gRPC branch call is for, from the dtm-* metadata the server sends.

    Raises `InvalidBranchInfo` when the call does not carry them.
    """
    md = _metadata(context)
    return BranchInfo.from_query(
        {k: md.get(f"dtm-{k}", "") for k in ("gid", "trans_type", "branch_id", "op")}
    )


def dtm_address_from_grpc_metadata(context: ServicerContext) -> str:
    """The server's gRPC address (`dtm-dtm`), for a branch that calls back (tcc, workflow)."""
    return _metadata(context).get("dtm-dtm", "")


def grpc_status_for(exc: BaseException | None) -> tuple[grpc.StatusCode, str]:
    """The status a gRPC branch answers for its outcome (the twin of `result_for`).

    `None` is OK; `Failure` is ABORTED (roll back); `Ongoing` is FAILED_PRECONDITION (ask
    again later); anything else INTERNAL, which the server retries with backoff.
    """
    if exc is None:
        return grpc.StatusCode.OK, ""
    if isinstance(exc, Failure):
        return grpc.StatusCode.ABORTED, exc.message
    if isinstance(exc, Ongoing):
        return grpc.StatusCode.FAILED_PRECONDITION, exc.message
    return grpc.StatusCode.INTERNAL, str(exc) or type(exc).__name__
