"""The SDK over gRPC only (no HTTP URL anywhere) against a real dtmx server: a TCC whose
try the client calls over gRPC, confirm/cancel called by the server over gRPC, queries over
dtmx's Query call, errors with their gRPC status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from dtmx.client import DtmClient, Failure, Op, Rejected, Status
from dtmx.client.grpc import GrpcTransport, branch_info_from_grpc_metadata, grpc_status_for
from tests.support.server import ServerProcess
from tests.support.util import aeventually, free_port


class Branches(grpc.GenericRpcHandler):
    """gRPC branches `/busi.Busi/<name>`: record (name, op, payload); "fail" payloads fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Op, bytes]] = []

    def service(self, details: Any) -> grpc.RpcMethodHandler:
        name = details.method.rsplit("/", 1)[-1]

        async def handle(request: bytes, context: Any) -> bytes:
            info = branch_info_from_grpc_metadata(context)
            self.calls.append((name, info.op, request))
            failing = request == b"fail" and info.op is Op.TRY
            code, message = grpc_status_for(Failure("no money") if failing else None)
            if code != grpc.StatusCode.OK:
                await context.abort(code, message)
            return b"reply:" + request

        return grpc.unary_unary_rpc_method_handler(handle)


@pytest.fixture
async def grpc_branches() -> AsyncIterator[tuple[Branches, str]]:
    handler = Branches()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    yield handler, f"127.0.0.1:{port}/busi.Busi"
    await server.stop(None)


@pytest.fixture
async def grpc_client(dtm_server: ServerProcess) -> AsyncIterator[DtmClient]:
    c = DtmClient(transport=GrpcTransport(dtm_server.grpc_target, timeout=5))
    yield c
    await c.aclose()


async def test_tcc_over_grpc(
    grpc_client: DtmClient, grpc_branches: tuple[Branches, str]
) -> None:
    handler, base = grpc_branches
    gid = await grpc_client.new_gid()
    async with grpc_client.tcc(gid) as tcc:
        resp = await tcc.call_branch(b"ok", f"{base}/Try", f"{base}/Confirm", f"{base}/Cancel")
    assert resp.body == b"reply:ok"

    async def confirmed() -> bool:
        state = await grpc_client.query(gid)
        return state is not None and state.status is Status.SUCCEED

    await aeventually(confirmed, timeout=15)
    assert [(n, op) for n, op, _ in handler.calls] == [("Try", Op.TRY), ("Confirm", Op.CONFIRM)]
    state = await grpc_client.query(gid)
    assert state is not None
    assert {(b.op, b.status) for b in state.branches} >= {(Op.CONFIRM, Status.SUCCEED)}


async def test_tcc_try_failure_over_grpc_cancels(
    grpc_client: DtmClient, grpc_branches: tuple[Branches, str]
) -> None:
    handler, base = grpc_branches
    gid = await grpc_client.new_gid()
    with pytest.raises(Failure) as info:
        async with grpc_client.tcc(gid) as tcc:
            await tcc.call_branch(b"fail", f"{base}/Try", f"{base}/Confirm", f"{base}/Cancel")
    assert (info.value.grpc_code, info.value.message) == ("ABORTED", "no money")

    async def failed() -> bool:
        state = await grpc_client.query(gid)
        return state is not None and state.status is Status.FAILED

    await aeventually(failed, timeout=15)
    assert ("Cancel", Op.CANCEL, b"fail") in handler.calls


async def test_query_unknown_gid_and_rejection(grpc_client: DtmClient) -> None:
    assert await grpc_client.query("no-such-gid") is None
    with pytest.raises(Rejected) as info:
        await grpc_client.query("bad gid")
    assert info.value.grpc_code == "INVALID_ARGUMENT" and "gid" in info.value.message
