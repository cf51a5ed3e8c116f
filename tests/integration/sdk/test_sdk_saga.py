"""Saga through the SDK against a real dtmx server."""

from __future__ import annotations

import pytest

from dtmx.client import (
    DtmClient,
    Rejected,
    Status,
    StillRunning,
    TransactionFailed,
    TransactionState,
)
from dtmx.client.sync import SyncDtmClient
from tests.integration.sdk.branch_service import BranchService
from tests.support.server import ServerProcess
from tests.support.util import aeventually


async def wait_status(client: DtmClient, gid: str, status: str) -> TransactionState:
    async def check() -> TransactionState | None:
        q = await client.query(gid)
        return q if q and q.status == status else None

    return await aeventually(check, timeout=15)


async def test_saga_success(client: DtmClient, branches: BranchService) -> None:
    gid = await client.new_gid()
    saga = (
        client.saga(gid)
        .add(branches.url("a1"), branches.url("c1"), {"amount": 30})
        .add(branches.url("a2"), branches.url("c2"), {"amount": 30})
    )
    saga.branch_headers = {"X-Sdk-Test": "yes"}
    await saga.submit()
    q = await wait_status(client, gid, "succeed")
    assert (branches.count("a1"), branches.count("a2")) == (1, 1)
    assert branches.count("c1") == branches.count("c2") == 0
    (call,) = branches.called("a1")
    assert call.body == {"amount": 30}
    assert call.query["gid"] == gid and call.query["branch_id"] == "01"
    assert call.query["op"] == "action" and call.query["trans_type"] == "saga"
    assert call.headers.get("X-Sdk-Test") == "yes"
    assert {b.branch_id for b in q.branches} == {"01", "02"}


async def test_saga_rollback(client: DtmClient, branches: BranchService) -> None:
    branches.results["a2"] = 409
    gid = await client.new_gid()
    saga = client.saga(gid)
    saga.add(branches.url("a1"), branches.url("c1"), {"n": 1})
    saga.add(branches.url("a2"), branches.url("c2"), {"n": 2})
    await saga.submit()
    await wait_status(client, gid, "failed")
    assert branches.count("c1") == branches.count("c2") == 1
    names = branches.names()
    assert names.index("c2") < names.index("c1")  # compensated in reverse


async def test_concurrent_saga_with_orders(client: DtmClient, branches: BranchService) -> None:
    gid = await client.new_gid()
    saga = client.saga(gid)
    for i in range(3):
        saga.add(branches.url(f"a{i}"), branches.url(f"c{i}"), {"i": i})
    saga.enable_concurrent().add_branch_order(2, [0, 1])
    await saga.submit()
    await wait_status(client, gid, "succeed")
    last = branches.called("a2")[0].at
    assert branches.called("a0")[0].at <= last and branches.called("a1")[0].at <= last
    q = await client.query(gid)
    assert q is not None and '"orders"' in q.raw["transaction"]["custom_data"]


async def test_wait_result_success(client: DtmClient, branches: BranchService) -> None:
    gid = await client.new_gid()
    saga = client.saga(gid).add(branches.url("a1"), branches.url("c1"), {"x": 1})
    saga.wait_result = True
    await saga.submit()
    q = await client.query(gid)  # no polling: submit answered when it was done
    assert q is not None and q.status is Status.SUCCEED


async def test_wait_result_failure(client: DtmClient, branches: BranchService) -> None:
    branches.results["a1"] = 409
    gid = await client.new_gid()
    saga = client.saga(gid).set_options(wait_result=True)
    saga.add(branches.url("a1"), branches.url("c1"), {"x": 1})
    with pytest.raises(TransactionFailed) as info:
        await saga.submit()
    assert info.value.gid == gid and info.value.status == 409
    await wait_status(client, gid, "failed")
    assert branches.count("c1") == 1


async def test_wait_result_still_running(client: DtmClient, branches: BranchService) -> None:
    branches.results["a1"] = 500  # an error is retried later: the saga stays submitted
    gid = await client.new_gid()
    saga = client.saga(gid).set_options(wait_result=True, retry_interval=60)
    saga.add(branches.url("a1"), branches.url("c1"), {"x": 1})
    with pytest.raises(StillRunning) as info:
        await saga.submit()
    assert (info.value.gid, info.value.state) == (gid, Status.SUBMITTED)
    state = await client.query(gid)
    assert state is not None and state.status is Status.SUBMITTED and not state.finished


async def test_bad_request_is_rejected(client: DtmClient) -> None:
    with pytest.raises(Rejected) as info:
        await client.transport.submit({"gid": "g x", "trans_type": "saga", "steps": []})
    assert info.value.status == 400 and "gid" in info.value.message


def test_sync_saga(dtm_server: ServerProcess, branches: BranchService) -> None:
    client = SyncDtmClient(dtm_server.url)
    try:
        gid = client.new_gid()
        client.saga(gid).add(branches.url("a1"), branches.url("c1"), {"sync": True}).submit()
        dtm_server.wait_status(gid, "succeed")
        assert branches.called("a1")[0].body == {"sync": True}
    finally:
        client.close()
