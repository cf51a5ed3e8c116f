"""`BranchOwnerHeader` on gRPC branches: the claim's owner token travels as gRPC metadata
(lower-cased, as gRPC requires), a client's branch header of the same name does not pass for
it, and without the setting no such metadata is sent. The HTTP path is tested in
tests/integration/core/test_owner_header.py."""

from __future__ import annotations

import os
import re

import grpc

from dtmx.api.proto import dtmgimp_pb2, dtmgimp_pb2_grpc
from tests.integration.grpc.test_grpc_server import _gid, _saga, _wait
from tests.support.grpc_busi import GrpcBusi
from tests.support.server import ServerProcess


async def test_owner_token_is_grpc_metadata_and_off_by_default(
        server: ServerProcess, dtm: dtmgimp_pb2_grpc.DtmStub, busi: GrpcBusi) -> None:
    opts = dtmgimp_pb2.DtmTransOptions(
        BranchHeaders={"Dtmx-Owner": "forged", "x-tenant": "t42"})
    with ServerProcess(extra={"BranchOwnerHeader": "Dtmx-Owner"}) as on:
        assert on.proc is not None
        async with grpc.aio.insecure_channel(on.grpc_target) as ch:
            gid = _gid()
            await dtmgimp_pb2_grpc.DtmStub(ch).Submit(_saga(busi, gid, TransOptions=opts))
            await _wait(on, gid, "succeed")
        [out] = busi.calls_of("TransOut")
        [into] = busi.calls_of("TransIn")
        token = out.metadata["dtmx-owner"]
        # <host>:<pid>:<tag>:<n>: the server's process, one claim of it
        assert re.fullmatch(rf"{re.escape(os.uname().nodename)}:{on.proc.pid}:[0-9a-f]+:\d+",
                            token), token
        assert into.metadata["dtmx-owner"] == token  # both steps under the submit's claim
        assert out.metadata["x-tenant"] == "t42" and out.metadata["dtm-gid"] == gid

    # the module's server runs without the setting: the client's header goes as it is
    gid2 = _gid()
    await dtm.Submit(_saga(busi, gid2, TransOptions=opts))
    await _wait(server, gid2, "succeed")
    [out2] = [c for c in busi.calls_of("TransOut") if c.metadata.get("dtm-gid") == gid2]
    assert out2.metadata["dtmx-owner"] == "forged"
