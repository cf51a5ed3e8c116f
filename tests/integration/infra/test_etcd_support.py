"""The etcd test helper starts a real etcd that a client can use, and restarts keep the data."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator

import aetcd
import pytest

from tests.support.etcd import EtcdMissing, EtcdProcess


@pytest.fixture
def etcd() -> Iterator[EtcdProcess]:
    with EtcdProcess() as proc:
        yield proc


async def _put(proc: EtcdProcess, key: bytes, value: bytes) -> None:
    client = aetcd.Client(host=proc.host, port=proc.port)
    try:
        await client.put(key, value)
    finally:
        await client.close()


async def _get(proc: EtcdProcess, key: bytes) -> bytes | None:
    client = aetcd.Client(host=proc.host, port=proc.port)
    try:
        got = await client.get(key)
        return None if got is None else bytes(got.value)
    finally:
        await client.close()


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")
def test_etcdctl_reports_healthy(etcd: EtcdProcess) -> None:
    out = subprocess.run(
        ["etcdctl", f"--endpoints={etcd.endpoint}", "endpoint", "health"],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    assert "is healthy" in out.stdout + out.stderr


async def test_put_get_and_restart_keeps_data(etcd: EtcdProcess) -> None:
    key = f"/dtmx-test/{uuid.uuid4().hex}".encode()
    await _put(etcd, key, b"v1")
    assert await _get(etcd, key) == b"v1"

    endpoint = etcd.endpoint
    etcd.restart()
    assert etcd.endpoint == endpoint
    assert await _get(etcd, key) == b"v1"

    # A crash (SIGKILL) keeps committed data too.
    await _put(etcd, key, b"v2")
    etcd.kill()
    assert not etcd.running
    etcd.start()
    assert await _get(etcd, key) == b"v2"


def test_close_removes_its_dir() -> None:
    proc = EtcdProcess()
    with proc:
        assert proc.running
        assert proc.data_dir.is_dir()
    assert not proc.running
    assert not proc.workdir.exists()


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTMX_TEST_ETCD_BIN", "/nonexistent/etcd")
    proc = EtcdProcess()
    with pytest.raises(EtcdMissing, match=r"scripts/services\.sh"):
        proc.start()
    proc.close()
