"""Pin the public API of dtmx.client: changing it must be a deliberate edit here."""

import subprocess
import sys

import dtmx.client
import dtmx.client.sync

EXPECTED = {
    "BranchBarrier",
    "BranchInfo",
    "BranchState",
    "DtmClient",
    "DtmError",
    "DtmResult",
    "Failure",
    "InvalidBranchInfo",
    "Msg",
    "Ongoing",
    "Op",
    "Rejected",
    "Saga",
    "Status",
    "StillRunning",
    "Tcc",
    "TimedOut",
    "TransType",
    "TransactionFailed",
    "TransactionState",
    "Xa",
    "XaBranchInfo",
    "result_for",
    "tcc_global_transaction",
    "xa_global_transaction",
    "xa_local_transaction",
}


def test_all_is_pinned() -> None:
    assert set(dtmx.client.__all__) == EXPECTED
    for name in EXPECTED:
        obj = getattr(dtmx.client, name)
        assert obj.__doc__, f"{name} has no docstring"


def test_plumbing_is_private() -> None:
    # Everything else lives in `_`-prefixed modules; the public modules are these.
    import pkgutil

    public = {m.name for m in pkgutil.iter_modules(dtmx.client.__path__) if m.name[0] != "_"}
    assert public == {"aiohttp_web", "barrier", "grpc", "starlette", "sync", "workflow"}


def test_wire_enums_are_defined_once() -> None:
    import dtmx.core.models
    import dtmx.errors
    import dtmx.wire

    for name in ("Op", "Status", "TransType"):
        assert getattr(dtmx.client, name) is getattr(dtmx.core.models, name)
        assert getattr(dtmx.client, name) is getattr(dtmx.wire, name)
    assert dtmx.client.DtmResult is dtmx.errors.DtmResult is dtmx.wire.DtmResult


def test_sync_exports() -> None:
    assert set(dtmx.client.sync.__all__) == {
        "SyncDtmClient",
        "SyncMsg",
        "SyncSaga",
        "SyncTcc",
        "SyncWorkflows",
        "SyncXa",
        "tcc_global_transaction",
        "xa_global_transaction",
        "xa_local_transaction",
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
