"""GrpcInvoker against a real in-process gRPC business server."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall
from dtmx.invoke.grpc import GrpcInvoker, outcome_of, parse_grpc_url
from tests.support.grpc_busi import GrpcBusi
from tests.support.proto import busi_pb2
from tests.support.util import aeventually, free_port


@pytest.fixture
async def busi() -> AsyncIterator[GrpcBusi]:
    async with GrpcBusi() as b:
        yield b


@pytest.fixture
async def invoker() -> AsyncIterator[GrpcInvoker]:
    inv = GrpcInvoker(dtm_address="127.0.0.1:36790")
    yield inv
    await inv.close()


def _call(url: str, **kw: object) -> BranchCall:
    args: dict[str, object] = {
        "url": url,
        "gid": uuid.uuid4().hex,
        "trans_type": "saga",
        "branch_id": "01",
        "op": "action",
        "payload": busi_pb2.BusiReq(Amount=30, UserID=1).SerializeToString(),
    }
    args.update(kw)
    return BranchCall(**args)  # type: ignore[arg-type]


def test_parse_grpc_url() -> None:
    u = parse_grpc_url("localhost:58081/busi.Busi/TransIn")
    assert (u.target, u.method) == ("localhost:58081", "/busi.Busi/TransIn")
    u = parse_grpc_url("etcd://127.0.0.1:2379/dtmservice/busi.Busi/TransIn")
    assert (u.target, u.method) == ("etcd://127.0.0.1:2379/dtmservice", "/busi.Busi/TransIn")
    for bad in ("localhost:58081", "localhost:58081/busi.Busi", "/busi.Busi/TransIn",
                "localhost:1/busi.Busi/", "etcd://busi.Busi/TransIn"):
        with pytest.raises(ValueError):
            parse_grpc_url(bad)


def test_outcome_mapping() -> None:
    s = grpc.StatusCode
    assert outcome_of(s.OK, None).outcome is Outcome.SUCCESS
    assert outcome_of(s.ABORTED, "no money").outcome is Outcome.FAILURE
    assert outcome_of(s.ABORTED, "ONGOING").outcome is Outcome.ONGOING  # pre-1.10 clients
    assert outcome_of(s.FAILED_PRECONDITION, "").outcome is Outcome.ONGOING
    for code in (s.UNAVAILABLE, s.DEADLINE_EXCEEDED, s.INTERNAL, s.UNKNOWN, s.NOT_FOUND,
                 s.INVALID_ARGUMENT, s.UNIMPLEMENTED):
        r = outcome_of(code, "x")
        assert r.outcome is Outcome.ERROR and code.name in r.detail


async def test_success_passes_payload_and_metadata(busi: GrpcBusi, invoker: GrpcInvoker) -> None:
    call = _call(busi.url("TransIn"), headers={"X-Token": "abc", "trace-id": "t1"}, op="compensate")
    r = await invoker.call(call)
    assert r.outcome is Outcome.SUCCESS, r
    [got] = busi.calls
    assert got.method == "/dtmxbusi.Busi/TransIn"
    assert got.payload == call.payload
    assert got.request().Amount == 30
    md = got.metadata
    assert md["dtm-gid"] == call.gid
    assert md["dtm-trans_type"] == "saga"
    assert md["dtm-branch_id"] == "01"
    assert md["dtm-op"] == "compensate"
    assert md["dtm-dtm"] == "127.0.0.1:36790"
    assert md["x-token"] == "abc" and md["trace-id"] == "t1"


async def test_empty_payload_and_binary_header(busi: GrpcBusi, invoker: GrpcInvoker) -> None:
    r = await invoker.call(_call(busi.url("TransOut"), payload=b"", headers={"k-bin": "v"}))
    assert r.outcome is Outcome.SUCCESS
    assert busi.calls[0].payload == b""
    assert busi.calls[0].metadata["k-bin"] == "v"


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (grpc.StatusCode.ABORTED, Outcome.FAILURE),
        (grpc.StatusCode.FAILED_PRECONDITION, Outcome.ONGOING),
        (grpc.StatusCode.UNAVAILABLE, Outcome.ERROR),
        (grpc.StatusCode.INTERNAL, Outcome.ERROR),
    ],
)
async def test_status_mapping(
    busi: GrpcBusi, invoker: GrpcInvoker, code: grpc.StatusCode, outcome: Outcome
) -> None:
    busi.set_result("TransOut", code, message="busi says no")
    r = await invoker.call(_call(busi.url("TransOut")))
    assert r.outcome is outcome
    assert "busi says no" in r.detail
    if outcome is Outcome.ERROR:
        assert code.name in r.detail


async def test_unimplemented_service_is_an_error(invoker: GrpcInvoker) -> None:
    # a real gRPC server that has no such method (the health-less bare server)
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        r = await invoker.call(_call(f"127.0.0.1:{port}/nope.Svc/M"))
        assert r.outcome is Outcome.ERROR and "UNIMPLEMENTED" in r.detail
    finally:
        await server.stop(None)


async def test_results_in_turn(busi: GrpcBusi, invoker: GrpcInvoker) -> None:
    busi.set_result("TransIn", grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.OK)
    outcomes = [(await invoker.call(_call(busi.url("TransIn")))).outcome for _ in range(4)]
    assert outcomes == [Outcome.ERROR, Outcome.ONGOING, Outcome.SUCCESS, Outcome.SUCCESS]


async def test_deadline(busi: GrpcBusi, invoker: GrpcInvoker) -> None:
    busi.set_delay("TransIn", 2.0)
    t0 = time.monotonic()
    r = await invoker.call(_call(busi.url("TransIn"), timeout=0.3))
    assert time.monotonic() - t0 < 1.5
    assert r.outcome is Outcome.ERROR and "DEADLINE_EXCEEDED" in r.detail
    # the deadline reaches the branch
    remaining = busi.calls[0].time_remaining
    assert remaining is not None and 0 < remaining <= 0.35  # clock granularity


async def test_unreachable_target_is_an_error(invoker: GrpcInvoker) -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    r = await invoker.call(_call(f"127.0.0.1:{port}/dtmxbusi.Busi/TransIn", timeout=2))
    assert r.outcome is Outcome.ERROR and "UNAVAILABLE" in r.detail
    assert time.monotonic() - t0 < 2.5


async def test_bad_and_empty_urls(invoker: GrpcInvoker) -> None:
    r = await invoker.call(_call("localhost:1234"))
    assert r.outcome is Outcome.ERROR and "bad gRPC branch url" in r.detail
    assert (await invoker.call(_call(""))).outcome is Outcome.SUCCESS
    assert invoker.channel_count == 0


async def test_channels_pooled_per_target(invoker: GrpcInvoker) -> None:
    async with GrpcBusi() as a, GrpcBusi() as b:
        for _ in range(3):
            for m in ("TransIn", "TransOut"):
                assert (await invoker.call(_call(a.url(m)))).outcome is Outcome.SUCCESS
        assert invoker.channel_count == 1
        assert (await invoker.call(_call(b.url("TransIn")))).outcome is Outcome.SUCCESS
        assert invoker.channel_count == 2
        assert len(a.calls) == 6 and len(b.calls) == 1
    await invoker.close()
    assert invoker.channel_count == 0


async def test_resolver_hook(busi: GrpcBusi) -> None:
    seen: list[str] = []

    async def resolve(target: str) -> str:
        seen.append(target)
        return busi.target

    inv = GrpcInvoker(resolver=resolve)
    try:
        r = await inv.call(_call("etcd://127.0.0.1:2379/busi-svc/dtmxbusi.Busi/TransIn"))
        assert r.outcome is Outcome.SUCCESS
        assert seen == ["etcd://127.0.0.1:2379/busi-svc"]
        assert busi.calls[0].metadata["dtm-dtm"] == ""

        async def broken(target: str) -> str:
            raise LookupError("no such service")

        inv2 = GrpcInvoker(resolver=broken)
        r = await inv2.call(_call("etcd://x:2379/svc/dtmxbusi.Busi/TransIn"))
        assert r.outcome is Outcome.ERROR and "no such service" in r.detail
        await inv2.close()
    finally:
        await inv.close()


async def test_reconnects_after_branch_server_restart(invoker: GrpcInvoker) -> None:
    busi = await GrpcBusi().start()
    url = busi.url("TransIn")
    assert (await invoker.call(_call(url))).outcome is Outcome.SUCCESS
    await busi.stop()
    assert (await invoker.call(_call(url, timeout=1))).outcome is Outcome.ERROR
    again = await GrpcBusi(port=busi.port).start()
    try:
        async def ok() -> bool:
            return (await invoker.call(_call(url, timeout=1))).outcome is Outcome.SUCCESS

        await aeventually(ok, timeout=8, interval=0.1)
        assert invoker.channel_count == 1
    finally:
        await again.stop()


async def test_a_reply_over_max_response_is_an_error_naming_the_cap(busi: GrpcBusi) -> None:
    inv = GrpcInvoker(max_response=64 * 1024)
    try:
        busi.set_reply("TransIn", b"\0" * (64 * 1024))  # at the cap: fine
        assert (await inv.call(_call(busi.url("TransIn")))).outcome is Outcome.SUCCESS
        busi.set_reply("TransIn", b"\0" * (64 * 1024 + 1))
        r = await inv.call(_call(busi.url("TransIn")))
        assert r.outcome is Outcome.ERROR
        assert r.detail == "ResponseTooLarge: branch response larger than 65536 bytes" \
                           " (65537 bytes)"
        # above gRPC's own 4 MiB default, when the cap allows it
        big = GrpcInvoker(max_response=8 * 1024 * 1024)
        busi.set_reply("TransIn", b"\0" * (5 * 1024 * 1024))
        assert (await big.call(_call(busi.url("TransIn")))).outcome is Outcome.SUCCESS
        await big.close()
        # the branch server refusing OUR request (its 4 MiB default) is not our cap's error,
        # even when our cap is the same number
        same = GrpcInvoker(max_response=4 * 1024 * 1024)
        r = await same.call(_call(busi.url("TransIn"), payload=b"\0" * (5 * 1024 * 1024)))
        await same.close()
        assert r.outcome is Outcome.ERROR and r.detail.startswith(
            "RESOURCE_EXHAUSTED: SERVER: Received message larger than max"), r.detail
    finally:
        await inv.close()
