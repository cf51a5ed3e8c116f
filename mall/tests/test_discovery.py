"""Several instances per service in etcd: registered with leases, listed, withdrawn."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import aetcd

from mall.common.discovery import Balancer
from mall.tests.conftest import Mall
from mall.user import service as user_service
from tests.support.etcd import EtcdProcess
from tests.support.util import aeventually


async def test_two_instances_round_robin_and_withdrawal(
    mall_factory: Any, etcd: EtcdProcess
) -> None:
    mall: Mall = mall_factory()
    first = await mall.start_user()
    second = await (await user_service.build(
        replace(mall.user_conf, ListenOn="127.0.0.1:0"))).start()
    try:
        balancer = Balancer(mall.api_conf.UserRpc)
        key = mall.user_conf.Etcd.Key  # type: ignore[union-attr]

        async def both() -> bool:
            return set(await balancer.discovery.resolve(key)) == {first.address, second.address}

        await aeventually(both, timeout=5)
        picks = {await balancer.pick() for _ in range(4)}
        assert picks == {first.address, second.address}

        # go-zero's layout: <key>/<lease id> -> host:port
        client = aetcd.Client(host=etcd.host, port=etcd.port)
        try:
            listed = {bytes(kv.key).decode(): bytes(kv.value).decode()
                      for kv in await client.get_prefix(f"{key}/".encode())}
        finally:
            await client.close()
        assert sorted(listed.values()) == sorted([first.address, second.address])
        assert all(k.removeprefix(f"{key}/").isdigit() for k in listed)
        await second.stop(0)  # revokes its lease: gone at once, not after the TTL

        async def one() -> bool:
            return await balancer.discovery.resolve(key) == [first.address]

        await aeventually(one, timeout=5)
        await balancer.close()
    finally:
        await second.stop(0)
