"""EtcdResolver / Discovery against a real etcd: watch, round-robin, cache, restart."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from dtmx.core.models import Outcome
from dtmx.discovery import (
    Discovery,
    DiscoveryError,
    EtcdRegistration,
    register,
)
from dtmx.invoke.base import BranchCall
from dtmx.invoke.grpc import GrpcInvoker
from tests.support.etcd import EtcdProcess
from tests.support.grpc_busi import GrpcBusi
from tests.support.util import aeventually, free_port


@pytest.fixture
async def discovery() -> AsyncIterator[Discovery]:
    d = Discovery()
    yield d
    await d.stop()


async def test_two_endpoints_round_robin_and_one_leaves(
    etcd: EtcdProcess, key: str, discovery: Discovery
) -> None:
    url = f"etcd://{etcd.endpoint}/{key}"
    a = await register(url, "10.0.0.1:1", ttl=5)
    b = await register(url, "10.0.0.2:2", ttl=5)
    try:
        resolver = discovery.resolver(url)
        await resolver.start()
        assert resolver.endpoints == ["10.0.0.1:1", "10.0.0.2:2"]
        picks = [await discovery.resolve(url) for _ in range(6)]
        assert Counter(picks) == {"10.0.0.1:1": 3, "10.0.0.2:2": 3}
        assert picks[0] != picks[1]  # alternates, not random

        await b.stop()

        async def only_a() -> bool:
            return resolver.endpoints == ["10.0.0.1:1"]

        await aeventually(only_a, timeout=5)
        assert {await discovery.resolve(url) for _ in range(3)} == {"10.0.0.1:1"}

        c = await register(url, "10.0.0.3:3", ttl=5)  # a newcomer is seen by the watch

        async def with_c() -> bool:
            return resolver.endpoints == ["10.0.0.1:1", "10.0.0.3:3"]

        await aeventually(with_c, timeout=5)
        await c.stop()
    finally:
        await a.stop()
        await b.stop()


async def test_other_keys_with_the_same_prefix_text_are_not_mixed_in(
    etcd: EtcdProcess, key: str, discovery: Discovery
) -> None:
    url = f"etcd://{etcd.endpoint}/{key}"
    async with EtcdRegistration(etcd.endpoint, key, "10.0.0.1:1"), \
            EtcdRegistration(etcd.endpoint, key + "x", "10.0.0.9:9"):
        assert {await discovery.resolve(url) for _ in range(4)} == {"10.0.0.1:1"}


async def test_cached_endpoints_serve_while_etcd_is_down_and_watch_comes_back(
    etcd: EtcdProcess, key: str, discovery: Discovery
) -> None:
    url = f"etcd://{etcd.endpoint}/{key}"
    async with EtcdRegistration(etcd.endpoint, key, "10.0.0.1:1", ttl=2):
        assert await discovery.resolve(url) == "10.0.0.1:1"
        await asyncio.to_thread(etcd.stop)
        try:
            for _ in range(5):
                assert await discovery.resolve(url) == "10.0.0.1:1"
                await asyncio.sleep(0.1)
        finally:
            await asyncio.to_thread(etcd.start)
        # the watch was recreated: a registration made after the restart shows up. etcd
        # answers /health before a new gRPC connection to it may succeed (grpc shares a
        # subchannel still in its reconnect backoff), so the registration is retried
        second = EtcdRegistration(etcd.endpoint, key, "10.0.0.2:2", ttl=2)

        async def registered() -> bool:
            try:
                await second.start()
            except DiscoveryError:
                return False
            return True

        await aeventually(registered, timeout=10, interval=0.2)
        try:

            async def both() -> bool:
                return discovery.resolver(url).endpoints == ["10.0.0.1:1", "10.0.0.2:2"]

            await aeventually(both, timeout=10)
        finally:
            await second.stop()


async def test_resolve_passes_plain_targets_and_reports_errors(
    etcd: EtcdProcess, key: str, discovery: Discovery
) -> None:
    assert await discovery.resolve("127.0.0.1:36790") == "127.0.0.1:36790"
    with pytest.raises(DiscoveryError, match="no endpoint registered"):
        await discovery.resolve(f"etcd://{etcd.endpoint}/{key}")
    with pytest.raises(DiscoveryError, match="not reachable"):
        await discovery.resolve(f"etcd://127.0.0.1:{free_port()}/{key}")
    async with EtcdRegistration(etcd.endpoint, key, "10.0.0.7:7"):

        async def seen() -> str | None:
            try:
                return await discovery.resolve(f"etcd://{etcd.endpoint}/{key}")
            except DiscoveryError:  # the watch event is on its way
                return None

        # the resolver made by the failed call above is still watching: it sees the key
        assert await aeventually(seen, timeout=5) == "10.0.0.7:7"


async def test_grpc_invoker_calls_through_etcd(etcd: EtcdProcess, key: str,
                                               discovery: Discovery) -> None:
    async with GrpcBusi() as one, GrpcBusi() as two:
        regs = [await register(f"etcd://{etcd.endpoint}/{key}", b.target) for b in (one, two)]
        inv = GrpcInvoker(dtm_address="127.0.0.1:1", resolver=discovery.resolve)
        try:
            for i in range(4):
                r = await inv.call(BranchCall(
                    url=f"etcd://{etcd.endpoint}/{key}/dtmxbusi.Busi/TransIn", gid=f"g{i}",
                    trans_type="saga", branch_id="01", op="action", payload=b""))
                assert r.outcome is Outcome.SUCCESS, r
            assert len(one.calls) == 2 and len(two.calls) == 2
        finally:
            await inv.close()
            for r_ in regs:
                await r_.stop()
