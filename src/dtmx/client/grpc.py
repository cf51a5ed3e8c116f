"""The SDK over gRPC: a `Transport` speaking `dtmgimp.Dtm`, gRPC branch calls, and
branch-side helpers.

Needs the `grpc` extra (grpcio, protobuf) and imports only the generated `dtmx.proto`
stubs (shared with the server), never the server itself.

    client = DtmClient(transport=GrpcTransport("dtm:36790"))

Bodies arrive in DTM's JSON shape (what `to_body()` builds) and are converted to a
`DtmRequest` here. gRPC statuses become the SDK's errors once, in `error_from_rpc`:
ABORTED is `Failure`, FAILED_PRECONDITION is `Ongoing`, DEADLINE_EXCEEDED `TimedOut`,
the codes of a refused request (INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED...)
`Rejected`, anything else a plain `DtmError`; the code's name is the error's `grpc_code`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import grpc.aio
import orjson
from google.protobuf import empty_pb2

from dtmx.client._branch import BranchInfo
from dtmx.client._consts import DtmResult, Op
from dtmx.client._errors import DtmError, Failure, Ongoing, Rejected, TimedOut
from dtmx.client._http import BranchResponse, HttpTransport
from dtmx.proto import dtmgimp_pb2, dtmgimp_pb2_grpc

if TYPE_CHECKING:
    from dtmx.client._base import TransBase

ServicerContext: TypeAlias = grpc.aio.ServicerContext

# The keys of a registerBranch map that have their own DtmBranchRequest field.
_BRANCH_FIELDS = ("gid", "trans_type", "branch_id", "data")
_REJECTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def error_from_rpc(e: grpc.aio.AioRpcError) -> DtmError:
    """The SDK error a gRPC status stands for (`grpc_code` = the status name)."""
    code, message = e.code(), e.details() or ""
    kw: dict[str, Any] = {"grpc_code": code.name}
    if code == grpc.StatusCode.ABORTED:
        # servers and branches before DTM 1.10 said "ongoing" as ABORTED "ONGOING"
        if message == DtmResult.ONGOING:
            return Ongoing(message, **kw)
        return Failure(message or None, **kw)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return Ongoing(message or None, **kw)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TimedOut(message or None, **kw)
    if code in _REJECTED:
        return Rejected(message or code.name, **kw)
    return DtmError(message or code.name, **kw)


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


class _Channels:
    """One grpc.aio channel per target, opened lazily in the running loop (a channel belongs
    to the loop that made it) and reused."""

    def __init__(self, credentials: grpc.ChannelCredentials | None) -> None:
        self.credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self, target: str) -> grpc.aio.Channel:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._channels, self._loop = {}, loop
        ch = self._channels.get(target)
        if ch is None:
            if self.credentials is None:
                ch = grpc.aio.insecure_channel(target)
            else:
                ch = grpc.aio.secure_channel(target, self.credentials)
            self._channels[target] = ch
        return ch

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        if self._loop is asyncio.get_running_loop():
            for ch in channels.values():
                await ch.close()


class GrpcTransport:
    """The `Transport` over DTM's gRPC API at `server` ("host:port").

    `timeout` bounds each call, in seconds. `metadata` goes with every call and `token`
    adds ``authorization: Bearer <token>``; `credentials` (``grpc.ssl_channel_credentials``)
    makes the channel TLS. `query` uses dtmx's `Query` call; a DTM server has none, so for
    one give `http_server` (its HTTP base URL) and queries go there.
    """

    def __init__(
        self,
        server: str,
        *,
        http_server: str | None = None,
        timeout: float = 10.0,
        metadata: Mapping[str, str] | None = None,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.server = server
        self.timeout = timeout
        md = {k.lower(): v for k, v in (metadata or {}).items()}
        if token:
            md["authorization"] = f"Bearer {token}"
        self._metadata = tuple(md.items())
        self._http = HttpTransport(http_server) if http_server else None
        self._channels = _Channels(credentials)

    def stub(self) -> dtmgimp_pb2_grpc.DtmStub:
        """The `dtmgimp.Dtm` stub on the running loop's channel."""
        return dtmgimp_pb2_grpc.DtmStub(self._channels.get(self.server))  # type: ignore[no-untyped-call]

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self.stub(), method)(
                request, timeout=self.timeout, metadata=self._metadata
            )
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

    async def prepare_workflow(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """PrepareWorkflow, its reply in the JSON shape of the HTTP API."""
        reply = await self._call("PrepareWorkflow", dtm_request(body))
        tx = reply.Transaction
        return {
            "transaction": {
                "gid": tx.Gid,
                "status": tx.Status,
                "rollback_reason": tx.RollbackReason,
                "result": tx.Result,
            },
            "progresses": [
                {
                    "branch_id": p.BranchID,
                    "op": p.Op,
                    "status": p.Status,
                    "bin_data": base64.b64encode(p.BinData).decode(),
                }
                for p in reply.Progresses
            ],
        }

    async def query(self, gid: str) -> dict[str, Any]:
        """The query answer in DTM's JSON shape: dtmx's Query call, or HTTP if configured."""
        if self._http is not None:
            return await self._http.query(gid)
        try:
            reply = await self._call("Query", dtmgimp_pb2.DtmQueryRequest(Gid=gid))
        except Rejected as e:
            if e.grpc_code == grpc.StatusCode.UNIMPLEMENTED.name:
                raise Rejected(
                    "this server's gRPC API has no Query (a DTM server): give GrpcTransport "
                    "http_server=<its HTTP base URL>",
                    grpc_code=e.grpc_code,
                ) from None
            raise
        data = orjson.loads(reply.Json)
        if not isinstance(data, dict):
            raise DtmError("Query answered something other than a JSON object")
        return data

    async def close(self) -> None:
        """Close the channel (a new one opens on the next call)."""
        await self._channels.close()
        if self._http is not None:
            await self._http.close()


class GrpcBranchCaller:
    """Calls gRPC branches (``host:port/pkg.Service/Method``) as the server would: the
    payload as the request bytes, DTM's dtm-* metadata, the reply's bytes back.

    `DtmClient` uses one for the branch calls it makes itself (a TCC try).
    """

    def __init__(
        self,
        *,
        dtm_address: str = "",
        timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.dtm_address = dtm_address
        self.timeout = timeout
        self._channels = _Channels(credentials)

    async def call(
        self,
        url: str,
        trans: TransBase,
        *,
        branch_id: str,
        op: Op,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> BranchResponse:
        """Call the branch; raise `Failure` / `Ongoing` / `DtmError` as its status says."""
        target, sep, method = _split_grpc_url(url)
        md: list[tuple[str, str]] = [
            ("dtm-gid", trans.gid),
            ("dtm-trans_type", trans.trans_type.value),
            ("dtm-branch_id", branch_id),
            ("dtm-op", op.value),
            ("dtm-dtm", self.dtm_address),
        ]
        md += [(k.lower(), v) for k, v in (headers or {}).items()]
        call = self._channels.get(target).unary_unary(
            sep + method, request_serializer=None, response_deserializer=None
        )
        payload = data.encode() if isinstance(data, str) else (data or b"")
        try:
            reply = await call(payload, timeout=self.timeout, metadata=tuple(md))
        except grpc.aio.AioRpcError as e:
            raise error_from_rpc(e) from None
        return BranchResponse(200, bytes(reply))

    async def close(self) -> None:
        """Close the channels (new ones open on the next call)."""
        await self._channels.close()


def _split_grpc_url(url: str) -> tuple[str, str, str]:
    """`host:port/pkg.Service/Method` -> ("host:port", "/", "pkg.Service/Method")."""
    parts = url.rsplit("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"bad gRPC branch url {url!r}, expected host:port/pkg.Service/Method")
    return parts[0], "/", f"{parts[1]}/{parts[2]}"


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
