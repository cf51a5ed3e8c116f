"""The SDK's branch-side gRPC helpers, called by the server's GrpcInvoker."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from dtmx.client._branch import BranchInfo
from dtmx.client._consts import Op, TransType
from dtmx.client._errors import Failure, InvalidBranchInfo, Ongoing
from dtmx.client.grpc import (
    branch_info_from_grpc_metadata,
    dtm_address_from_grpc_metadata,
    grpc_status_for,
)
from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall
from dtmx.invoke.grpc import GrpcInvoker
from tests.support.util import free_port


class _Branch(grpc.GenericRpcHandler):
    """A branch that reads its BranchInfo and answers by the payload: b"fail", b"wait"..."""

    def __init__(self) -> None:
        self.seen: list[tuple[BranchInfo | str, str]] = []

    def service(self, details: Any) -> grpc.RpcMethodHandler:
        async def handle(request: bytes, context: Any) -> bytes:
            try:
                info: BranchInfo | str = branch_info_from_grpc_metadata(context)
            except InvalidBranchInfo as e:
                info = e.message
            self.seen.append((info, dtm_address_from_grpc_metadata(context)))
            exc = {b"fail": Failure("no money"), b"wait": Ongoing(),
                   b"boom": RuntimeError("boom")}.get(request)
            code, message = grpc_status_for(exc)
            if code != grpc.StatusCode.OK:
                await context.abort(code, message)
            return b""

        return grpc.unary_unary_rpc_method_handler(handle)


async def test_branch_helpers_round_trip() -> None:
    handler = _Branch()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    inv = GrpcInvoker(dtm_address="dtm.local:36790")
    url = f"127.0.0.1:{port}/any.Svc/TransOut"
    try:
        def call(payload: bytes, **kw: Any) -> BranchCall:
            args: dict[str, Any] = {"url": url, "gid": "g1", "trans_type": "tcc",
                                    "branch_id": "01", "op": "confirm", "payload": payload}
            args.update(kw)
            return BranchCall(**args)

        assert (await inv.call(call(b"ok"))).outcome is Outcome.SUCCESS
        assert handler.seen[-1] == (BranchInfo("g1", TransType.TCC, "01", Op.CONFIRM),
                                    "dtm.local:36790")
        r = await inv.call(call(b"fail"))
        assert r.outcome is Outcome.FAILURE and r.detail == "no money"
        assert (await inv.call(call(b"wait"))).outcome is Outcome.ONGOING
        r = await inv.call(call(b"boom"))
        assert r.outcome is Outcome.ERROR and "boom" in r.detail
        # a call without proper dtm-* metadata is refused by the helper
        await inv.call(call(b"ok", op="nope"))
        assert isinstance(handler.seen[-1][0], str) and "op" in handler.seen[-1][0]
        await inv.call(call(b"ok", gid=""))
        assert "gid" in str(handler.seen[-1][0])
    finally:
        await inv.close()
        await server.stop(None)


def test_grpc_status_for() -> None:
    assert grpc_status_for(None) == (grpc.StatusCode.OK, "")
    assert grpc_status_for(Failure("x")) == (grpc.StatusCode.ABORTED, "x")
    assert grpc_status_for(Ongoing("y"))[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert grpc_status_for(ValueError("z")) == (grpc.StatusCode.INTERNAL, "z")


@pytest.mark.parametrize("module", ["dtmx.client.grpc"])
def test_sdk_does_not_import_the_server(module: str) -> None:
    import subprocess
    import sys

    code = (f"import sys, {module}; "
            "bad = [m for m in sys.modules if m.startswith(('dtmx.api.grpc_api', 'dtmx.service',"
            " 'dtmx.engine', 'dtmx.stores', 'dtmx.invoke'))]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
