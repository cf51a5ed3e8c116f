"""Pin the public API of dtmx.client: changing it must be a deliberate edit here."""

import subprocess
import sys

import dtmx.client
import dtmx.client.sync

EXPECTED = {
    "BranchBarrier",
    "BranchIdGen",
    "BranchInfo",
    "BranchResponse",
    "DtmClient",
    "DtmError",
    "DtmResult",
    "Failure",
    "HttpTransport",
    "InvalidBranchInfo",
    "Msg",
    "Ongoing",
    "Op",
    "Saga",
    "Tcc",
    "TransType",
    "Transport",
    "payload_text",
    "result_for",
    "tcc_global_transaction",
}


def test_all_is_pinned() -> None:
    assert set(dtmx.client.__all__) == EXPECTED
    for name in EXPECTED:
        obj = getattr(dtmx.client, name)
        assert obj.__doc__, f"{name} has no docstring"


def test_sync_exports() -> None:
    assert set(dtmx.client.sync.__all__) == {
        "SyncDtmClient",
        "SyncMsg",
        "SyncSaga",
        "SyncTcc",
        "tcc_global_transaction",
    }


def test_sdk_imports_without_server_modules() -> None:
    code = (
        "import sys, dtmx.client, dtmx.client.sync, dtmx.client.aiohttp_web, "
        "dtmx.client.starlette\n"
        "bad = [m for m in sys.modules if m.startswith(('dtmx.core', 'dtmx.stores', "
        "'dtmx.service', 'dtmx.api', 'dtmx.invoke', 'dtmx.engine', 'starlette', 'grpc', "
        "'asyncpg', 'redis'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
