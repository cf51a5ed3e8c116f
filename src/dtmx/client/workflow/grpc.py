"""Workflows over gRPC (needs the `grpc` extra): the client interceptor that records a
workflow's gRPC calls, and the `workflow.Workflow/Execute` resume service.

    channel = grpc.aio.insecure_channel(target, interceptors=[WorkflowInterceptor()])
    stub = BusiStub(channel)

    @workflows.register("transfer")
    async def transfer(wf: Workflow, data: bytes) -> None:
        wf.new_branch()
        await stub.TransOut(req)        # recorded as branch 01's action, replayed on resume

    add_grpc_servicer(grpc_server, workflows)   # the server resumes workflows here

Outside a workflow the interceptor passes calls through untouched. Inside one it adds
DTM's dtm-* metadata (so the service can use the barrier) and records the reply; a failed
call raises the SDK's `Failure` (ABORTED) / `Ongoing` (FAILED_PRECONDITION) / `DtmError`,
on the first run and on replay alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pool, message_factory

from dtmx.client._consts import Op, Status, TransType
from dtmx.client._errors import DtmError
from dtmx.client.grpc import error_from_rpc, grpc_status_for
from dtmx.client.workflow._outcome import Outcome, outcome_of_error
from dtmx.client.workflow._workflow import current_workflow

if TYPE_CHECKING:
    from dtmx.client.barrier import BranchBarrier
    from dtmx.client.workflow._registry import Workflows

#: The resume service's full method name (DTM's `wf.proto`).
EXECUTE_METHOD = "/workflow.Workflow/Execute"
_SERVICE, _METHOD = "workflow.Workflow", "Execute"


def encode_workflow_data(data: bytes) -> bytes:
    """`WorkflowData{bytes Data = 1}` serialized (field 1, length-delimited)."""
    if not data:
        return b""
    return b"\x0a" + _varint(len(data)) + data


def decode_workflow_data(raw: bytes) -> bytes:
    """The `Data` field of a serialized `WorkflowData` (other fields skipped)."""
    pos, out = 0, b""
    while pos < len(raw):
        key, pos = _read_varint(raw, pos)
        field_no, wire = key >> 3, key & 7
        if wire == 2:
            size, pos = _read_varint(raw, pos)
            if field_no == 1:
                out = raw[pos : pos + size]
            pos += size
        elif wire == 0:
            _, pos = _read_varint(raw, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError("malformed WorkflowData")
    if pos != len(raw):
        raise ValueError("truncated WorkflowData")
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if pos >= len(raw) or shift > 63:
            raise ValueError("malformed varint in WorkflowData")
        b = raw[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _reply_class(method: str) -> Callable[[bytes], Any]:
    """The reply message's parser of a method, from the loaded protobuf descriptors."""
    full = method.strip("/").replace("/", ".")
    desc = descriptor_pool.Default().FindMethodByName(full)
    return message_factory.GetMessageClass(desc.output_type).FromString  # type: ignore[no-any-return]


def _method_of(details: grpc.aio.ClientCallDetails) -> str:
    m = details.method
    return m.decode() if isinstance(m, bytes) else str(m)


class WorkflowInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Records a workflow's unary gRPC calls as its branches' actions (see the module)."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Pass through outside a workflow; else add dtm-* metadata and record the reply."""
        wf = current_workflow.get()
        if wf is None:
            return await continuation(client_call_details, request)
        method = _method_of(client_call_details)
        if not wf.branch_id:
            # Unrecorded, it would run again on every replay: refuse rather than guess.
            raise DtmError(f"{method} inside workflow {wf.name!r} before any "
                           "wf.new_branch(): start a branch for each call")
        md = list(client_call_details.metadata or ())
        md += [
            ("dtm-gid", wf.gid),
            ("dtm-trans_type", TransType.WORKFLOW.value),
            ("dtm-branch_id", wf.branch_id),
            ("dtm-op", wf.op.value),
            ("dtm-dtm", wf.client.dtm_address),
        ]
        details = grpc.aio.ClientCallDetails(
            client_call_details.method, client_call_details.timeout, grpc.aio.Metadata(*md),
            client_call_details.credentials, client_call_details.wait_for_ready,
        )

        async def invoke() -> Any:
            try:
                return await (await continuation(details, request))
            except grpc.aio.AioRpcError as e:
                raise error_from_rpc(e) from None

        if wf.op is not Op.ACTION:
            return await invoke()  # inside a callback: the callback is what is recorded

        async def run(_: BranchBarrier) -> Outcome:
            try:
                reply = await invoke()
            except DtmError as e:
                return outcome_of_error(e)
            return Outcome(Status.SUCCEED, reply.SerializeToString())

        data = await wf.run_step(f"grpc {method}", run)
        return _reply_class(method)(data)


def add_grpc_servicer(server: grpc.aio.Server, workflows: Workflows) -> None:
    """Serve ``workflow.Workflow/Execute`` on `server`: the server's resume calls (the
    workflow's name in dtm-op, its gid in dtm-gid, the input in `WorkflowData.Data`)."""

    async def execute(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        md = {k: (v.decode() if isinstance(v, bytes) else v)
              for k, v in context.invocation_metadata() or ()}
        gid, name = md.get("dtm-gid", ""), md.get("dtm-op", "")
        if not gid or not name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "missing dtm-gid or dtm-op")
        try:
            await workflows.execute(name, gid, data, wait=False)
        except Exception as e:  # every outcome becomes a status
            code, message = grpc_status_for(e)
            await context.abort(code, message)
        return b""  # google.protobuf.Empty

    handler = grpc.unary_unary_rpc_method_handler(
        execute, request_deserializer=decode_workflow_data, response_serializer=bytes
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(_SERVICE, {_METHOD: handler}),)
    )
