"""A real etcd per test (tests.support.etcd) and a plain aetcd client to look at its keys."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

# No skip when etcd is missing: scripts/test.sh installs it, and EtcdProcess fails with a
# message saying so, which is what a broken install step should do.
from tests.support.etcd import EtcdProcess

# Short reconnect backoff so the inspecting client sees a restarted etcd at once.
_OPTIONS = {"grpc.initial_reconnect_backoff_ms": 100, "grpc.min_reconnect_backoff_ms": 100,
            "grpc.max_reconnect_backoff_ms": 500}


@pytest.fixture
def etcd() -> Iterator[EtcdProcess]:
    with EtcdProcess() as proc:
        yield proc


class Peek:
    """Reads etcd directly, independent of dtmx.discovery."""

    def __init__(self, etcd: EtcdProcess) -> None:
        import aetcd

        self.client: Any = aetcd.Client(host=etcd.host, port=etcd.port, timeout=2,
                                        options=dict(_OPTIONS))

    async def prefix(self, prefix: str) -> dict[str, str]:
        got = await self.client.get_prefix(prefix.encode())
        return {bytes(kv.key).decode(): bytes(kv.value).decode() for kv in got}

    async def values(self, prefix: str) -> list[str]:
        return sorted((await self.prefix(prefix)).values())


@pytest.fixture
async def peek(etcd: EtcdProcess) -> AsyncIterator[Peek]:
    p = Peek(etcd)
    yield p
    await p.client.close()


@pytest.fixture
def key() -> str:
    """A service key of this test's own."""
    return f"svc-{uuid.uuid4().hex[:10]}"
