"""A real `dtmx serve` with a MicroService etcd block: it registers itself, and its gRPC
branches with etcd:// URLs reach whichever registered instance is alive."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import orjson
import yaml

from dtmx.api.proto import dtmgimp_pb2, dtmgimp_pb2_grpc
from dtmx.discovery import Discovery, DiscoveryError, register
from tests.support.etcd import EtcdProcess
from tests.support.grpc_busi import SERVICE, GrpcBusi
from tests.support.proto import busi_pb2
from tests.support.server import ServerProcess
from tests.support.util import aeventually, free_port

if TYPE_CHECKING:
    from tests.integration.etcd.conftest import Peek


def _microservice(etcd: str, key: str) -> dict[str, Any]:
    return {"MicroService": {"Driver": "dtm-driver-gozero", "Target": f"etcd://{etcd}/{key}",
                             "EndPoint": ""}}


def _server(etcd: EtcdProcess, key: str) -> ServerProcess:
    s = ServerProcess(extra=_microservice(etcd.endpoint, key))
    # the endpoint is only known once ServerProcess picked its ports
    s.conf["MicroService"]["EndPoint"] = s.grpc_target
    s.conf_path.write_text(yaml.safe_dump(s.conf))
    return s


async def test_serve_registers_itself_and_leaves_on_stop(
    etcd: EtcdProcess, peek: Peek, key: str
) -> None:
    server = _server(etcd, key)
    await asyncio.to_thread(server.start)
    url = f"etcd://{etcd.endpoint}/{key}"
    discovery = Discovery()
    try:
        async def registered() -> str:
            try:  # the HTTP port (which start() waits for) opens before the registration
                return await discovery.resolve(url)
            except DiscoveryError:
                return ""

        assert await aeventually(registered, timeout=5) == server.grpc_target
        [(k, v)] = (await peek.prefix(f"{key}/")).items()
        assert re.fullmatch(rf"{key}/\d+", k) and v == server.grpc_target
        async with grpc.aio.insecure_channel(await discovery.resolve(url)) as ch:
            gid = (await dtmgimp_pb2_grpc.DtmStub(ch).NewGid(_empty())).Gid
            assert gid
        await asyncio.to_thread(server.stop)
        assert server.proc is not None and server.proc.returncode == 0, server.log()[-2000:]

        assert await peek.prefix(f"{key}/") == {}  # revoked at shutdown, not left to expire
    finally:
        await asyncio.to_thread(server.stop)
        await discovery.stop()


def _empty() -> Any:
    from google.protobuf import empty_pb2

    return empty_pb2.Empty()


def test_serve_with_etcd_down_exits_2_with_a_clear_message(key: str) -> None:
    server = ServerProcess(extra=_microservice(f"127.0.0.1:{free_port()}", key))
    server.conf["MicroService"]["EndPoint"] = server.grpc_target
    server.conf_path.write_text(yaml.safe_dump(server.conf))
    r = subprocess.run([sys.executable, "-m", "dtmx", "serve", "-c", str(server.conf_path)],
                       capture_output=True, text=True, timeout=10, cwd=server.workdir)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "is not reachable" in r.stderr and "Traceback" not in r.stderr


def _req(amount: int) -> bytes:
    return busi_pb2.BusiReq(Amount=amount, UserID=1).SerializeToString()


def _saga(etcd: EtcdProcess, key: str, gid: str) -> dtmgimp_pb2.DtmRequest:
    def url(method: str) -> str:
        return f"etcd://{etcd.endpoint}/{key}/{SERVICE}/{method}"

    steps = [{"action": url("TransOut"), "compensate": url("TransOutRevert")},
             {"action": url("TransIn"), "compensate": url("TransInRevert")}]
    return dtmgimp_pb2.DtmRequest(Gid=gid, TransType="saga", Steps=orjson.dumps(steps).decode(),
                                  BinPayloads=[_req(30), _req(31)])


async def test_sagas_through_etcd_survive_losing_one_of_two_instances(
    etcd: EtcdProcess, key: str
) -> None:
    server = _server(etcd, f"dtm-{key}")
    await asyncio.to_thread(server.start)
    busi_key = f"busi-{uuid.uuid4().hex[:8]}.svc"
    async with GrpcBusi() as one, GrpcBusi() as two:
        regs = [await register(f"etcd://{etcd.endpoint}/{busi_key}", b.target, ttl=5)
                for b in (one, two)]
        try:
            async with grpc.aio.insecure_channel(server.grpc_target) as ch:
                dtm = dtmgimp_pb2_grpc.DtmStub(ch)
                gids = [f"etcd-saga-{uuid.uuid4().hex}" for _ in range(30)]
                for i, gid in enumerate(gids):
                    await dtm.Submit(_saga(etcd, busi_key, gid))
                    if i == 9:
                        # both instances served by now; then one goes away mid-stream
                        async def both_called() -> bool:
                            return bool(one.calls) and bool(two.calls)

                        await aeventually(both_called, timeout=10)
                        await two.stop()
                        await regs[1].stop()

                async def all_succeeded() -> bool:
                    states = await asyncio.gather(
                        *(asyncio.to_thread(server.status, g) for g in gids))
                    return all(s == "succeed" for s in states)

                await aeventually(all_succeeded, timeout=30, interval=0.2)
            late = [c for c in one.calls if c.name == "TransIn"]
            assert len(late) >= 20  # the survivor took over
            assert not one.calls_of("TransOutRevert") and not two.calls_of("TransOutRevert")
        finally:
            for r in regs:
                await r.stop()
            await asyncio.to_thread(server.stop)
