"""EtcdRegistration against a real etcd: go-zero's key layout, keep-alive, restarts."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import TYPE_CHECKING

import pytest

from dtmx.discovery import DiscoveryError, EtcdRegistration, register, register_from_settings
from dtmx.errors import ConfigError
from dtmx.settings import MicroServiceSettings, Settings
from tests.support.etcd import EtcdProcess
from tests.support.util import aeventually, free_port

if TYPE_CHECKING:
    from tests.integration.etcd.conftest import Peek


async def test_key_is_prefix_slash_lease_id_and_goes_away_on_stop(
    etcd: EtcdProcess, peek: Peek, key: str
) -> None:
    reg = await register(f"etcd://{etcd.endpoint}/{key}", "10.1.2.3:36790", ttl=5)
    try:
        assert reg.lease_id is not None and reg.full_key == f"{key}/{reg.lease_id}"
        assert await peek.prefix(f"{key}/") == {f"{key}/{reg.lease_id}": "10.1.2.3:36790"}
        got = await peek.client.get(reg.full_key.encode())
        assert got.lease == reg.lease_id  # attached to the lease, as go-zero does
    finally:
        await reg.stop()
    assert await peek.prefix(f"{key}/") == {}  # revoked at once, not after the TTL
    await reg.stop()  # idempotent


async def test_keep_alive_outlives_several_ttls(etcd: EtcdProcess, peek: Peek, key: str) -> None:
    async with EtcdRegistration(etcd.endpoint, key, "h:1", ttl=1) as reg:
        first = reg.full_key
        deadline = time.monotonic() + 3.5  # three and a half TTLs
        while time.monotonic() < deadline:
            assert await peek.prefix(f"{key}/") == {first: "h:1"}
            await asyncio.sleep(0.1)
        assert reg.full_key == first  # the same lease all along


async def test_survives_etcd_restart(etcd: EtcdProcess, peek: Peek, key: str) -> None:
    async with EtcdRegistration(etcd.endpoint, key, "h:2", ttl=1) as reg:
        await asyncio.to_thread(etcd.restart)

        async def present() -> bool:
            return await peek.values(f"{key}/") == ["h:2"]

        await aeventually(present, timeout=10)
        # still kept alive well past the TTL after the restart
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            assert await present()
            await asyncio.sleep(0.1)
        assert reg.full_key is not None


async def test_registers_again_when_etcd_lost_its_data(
    etcd: EtcdProcess, peek: Peek, key: str
) -> None:
    async with EtcdRegistration(etcd.endpoint, key, "h:3", ttl=1) as reg:

        def wipe() -> None:
            etcd.kill()
            shutil.rmtree(etcd.data_dir)
            etcd.start()

        await asyncio.to_thread(wipe)
        assert await peek.prefix(f"{key}/") == {}  # the data really is gone

        async def back() -> bool:
            return await peek.prefix(f"{key}/") == {reg.full_key: "h:3"}

        await aeventually(back, timeout=10)


async def test_lease_revoked_behind_its_back_is_replaced(
    etcd: EtcdProcess, peek: Peek, key: str
) -> None:
    async with EtcdRegistration(etcd.endpoint, key, "h:4", ttl=1) as reg:
        old = reg.lease_id
        await peek.client.revoke_lease(old)

        async def back() -> bool:
            return reg.lease_id != old and await peek.values(f"{key}/") == ["h:4"]

        await aeventually(back, timeout=5)
        assert await peek.prefix(f"{key}/") == {f"{key}/{reg.lease_id}": "h:4"}


async def test_unreachable_etcd_fails_fast() -> None:
    t0 = time.monotonic()
    with pytest.raises(DiscoveryError, match="not reachable"):
        await register(f"etcd://127.0.0.1:{free_port()}/x", "h:5")
    assert time.monotonic() - t0 < 5


def _settings(target: str, endpoint: str) -> Settings:
    return Settings(MicroService=MicroServiceSettings(
        Driver="dtm-driver-gozero", Target=target, EndPoint=endpoint))


async def test_register_from_settings(etcd: EtcdProcess, peek: Peek, key: str) -> None:
    reg = await register_from_settings(_settings(f"etcd://{etcd.endpoint}/{key}", "h:36790"))
    try:
        assert await peek.values(f"{key}/") == ["h:36790"]
        assert reg.ttl == 10
    finally:
        await reg.stop()
    assert await peek.values(f"{key}/") == []


async def test_register_from_settings_errors_are_config_errors(etcd: EtcdProcess) -> None:
    with pytest.raises(ConfigError, match="EndPoint"):
        await register_from_settings(_settings(f"etcd://{etcd.endpoint}/k", ""))
    with pytest.raises(ConfigError, match="Target"):
        await register_from_settings(_settings("etcd://", "h:1"))
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"etcd at 127\.0\.0\.1:\d+ is not reachable"):
        await register_from_settings(_settings(f"etcd://127.0.0.1:{free_port()}/k", "h:1"))
    assert time.monotonic() - t0 < 5
