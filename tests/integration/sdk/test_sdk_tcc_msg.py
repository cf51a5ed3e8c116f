"""TCC and msg through the SDK against a real dtmx server."""

from __future__ import annotations

from typing import Any

import pytest

from dtmx.client import DtmClient, Failure, Status, Tcc, tcc_global_transaction
from tests.integration.sdk.branch_service import BranchService
from tests.integration.sdk.test_sdk_saga import wait_status
from tests.support.util import aeventually


async def test_tcc_success(client: DtmClient, branches: BranchService) -> None:
    gid = await client.new_gid()
    async with client.tcc(gid) as tcc:
        for i in (1, 2):
            r = await tcc.call_branch(
                {"i": i}, branches.url(f"try{i}"), branches.url(f"confirm{i}"),
                branches.url(f"cancel{i}"),
            )
            assert r.status == 200
    await wait_status(client, gid, "succeed")
    assert branches.count("confirm1") == branches.count("confirm2") == 1
    assert branches.count("cancel1") == branches.count("cancel2") == 0
    assert branches.called("confirm1")[0].body == {"i": 1}


async def test_tcc_rollback(client: DtmClient, branches: BranchService) -> None:
    branches.results["try2"] = 409
    gid = await client.new_gid()

    async def busi(tcc: Tcc) -> None:
        for i in (1, 2):
            await tcc.call_branch(
                {"i": i}, branches.url(f"try{i}"), branches.url(f"confirm{i}"),
                branches.url(f"cancel{i}"),
            )

    with pytest.raises(Failure):
        await tcc_global_transaction(client, gid, busi)
    q = await wait_status(client, gid, "failed")
    assert branches.count("cancel1") == branches.count("cancel2") == 1
    assert branches.count("confirm1") == 0
    assert "switched to fail" in q.rollback_reason


async def test_nested_tcc(client: DtmClient, branches: BranchService) -> None:
    gid = await client.new_gid()
    async with client.tcc(gid) as tcc:
        await tcc.call_branch(
            {"top": 1}, branches.url("nested"), branches.url("confirm"), branches.url("cancel")
        )
    q = await wait_status(client, gid, "succeed")
    assert branches.count("subconfirm1") == branches.count("subconfirm2") == 1
    assert branches.count("confirm") == 1
    ids = {b.branch_id for b in q.branches}
    assert {"01", "0101", "0102"} <= ids
    assert branches.called("subtry1")[0].query["branch_id"] == "0101"


async def test_msg_prepare_and_submit(client: DtmClient, branches: BranchService) -> None:
    gid = await client.new_gid()
    msg = client.msg(gid).add(branches.url("in1"), {"amount": 5}).add(branches.url("in2"), {})
    await msg.prepare(branches.url("qp"))
    q = await client.query(gid)
    assert q is not None and q.status is Status.PREPARED
    await msg.submit()
    await wait_status(client, gid, "succeed")
    assert branches.called("in1")[0].body == {"amount": 5}
    assert branches.count("in2") == 1
    assert branches.count("qp") == 0


async def test_msg_do_and_submit_failure_aborts(
    client: DtmClient, branches: BranchService
) -> None:
    gid = await client.new_gid()
    msg = client.msg(gid).add(branches.url("in1"), {"amount": 5})
    seen: list[Any] = []

    async def busi(barrier: Any) -> None:
        seen.append(barrier)
        raise Failure("insufficient balance")

    with pytest.raises(Failure, match="insufficient"):
        await msg.do_and_submit(branches.url("qp"), busi)
    await wait_status(client, gid, "failed")
    assert branches.count("in1") == 0
    assert seen[0].gid == gid and seen[0].branch_id == "00"


async def test_msg_do_and_submit_success(client: DtmClient, branches: BranchService) -> None:
    gid = await client.new_gid()
    msg = client.msg(gid).add(branches.url("in1"), {"amount": 5})
    ran: list[tuple[str, str, str, int]] = []

    async def busi(barrier: Any) -> None:
        # the local work runs between prepare and submit: the msg is prepared, nothing sent
        q = await client.query(gid)
        assert q is not None
        ran.append((barrier.gid, barrier.branch_id, barrier.op, branches.count("in1")))
        assert q.status is Status.PREPARED

    await msg.do_and_submit(branches.url("qp"), busi)
    assert ran == [(gid, "00", "msg", 0)]
    await wait_status(client, gid, "succeed")
    await aeventually(lambda: _async_true(branches.count("in1") == 1))
    assert branches.count("qp") == 0  # committed and submitted: no back-check needed


async def _async_true(value: bool) -> bool:
    return value
