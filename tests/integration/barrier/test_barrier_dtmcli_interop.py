"""Barrier rows written by PyPI dtmcli (1.7.7.0, as published) and by dtmx honour each other.

dtmcli builds its SQL by string formatting; that is safe here because test gids are hex.
"""

from __future__ import annotations

from pathlib import Path

import pymysql
import pytest
from dtmcli import barrier as dtmcli_barrier
from dtmcli.utils import DTMFailureError

from dtmx.client.barrier import BranchBarrier, Duplicated, Failure
from dtmx.client.barrier._sql import Dialect
from tests.integration.barrier.barrier_backends import (
    BUSI_TABLE,
    MYSQL,
    Harness,
    get_harness,
    new_gid,
)


@pytest.fixture(params=["asyncmy", "pymysql"])
async def mh(request: pytest.FixtureRequest, barrier_tmp: Path) -> Harness:
    """Our side, on MariaDB."""
    return await get_harness(request.param, barrier_tmp)


def theirs(gid: str, op: str, trans_type: str = "saga", branch: str = "01") -> None:
    """One branch request handled by dtmcli's barrier with a PyMySQL cursor."""
    conn = pymysql.connect(**MYSQL)
    try:
        sql = f"INSERT INTO {BUSI_TABLE[Dialect.MYSQL]}(gid, branch_id, op) VALUES (%s, %s, %s)"
        barrier = dtmcli_barrier.BranchBarrier(trans_type, gid, branch, op)
        barrier.call(conn.cursor(), lambda cur: cur.execute(sql, (gid, branch, op)))
    finally:
        conn.close()


def theirs_query_prepared(gid: str) -> None:
    conn = pymysql.connect(**MYSQL)
    try:
        dtmcli_barrier.BranchBarrier("msg", gid, "00", "msg").query_prepared(conn.cursor())
    finally:
        conn.close()


def ours(gid: str, op: str, trans_type: str = "saga", branch: str = "01") -> BranchBarrier:
    return BranchBarrier(trans_type=trans_type, gid=gid, branch_id=branch, op=op)


async def test_their_action_is_seen_by_our_action_and_compensate(mh: Harness) -> None:
    gid = new_gid()
    theirs(gid, "action")
    await mh.request(ours(gid, "action"))  # duplicate of theirs: skipped
    await mh.request(ours(gid, "compensate"))  # not a null compensation: runs
    assert mh.busi_ops(gid) == ["action", "compensate"]


async def test_our_action_is_seen_by_theirs(mh: Harness) -> None:
    gid = new_gid()
    await mh.request(ours(gid, "action"))
    theirs(gid, "action")
    theirs(gid, "compensate")
    assert mh.busi_ops(gid) == ["action", "compensate"]


async def test_our_null_compensation_blocks_their_hanging_try(mh: Harness) -> None:
    gid = new_gid()
    await mh.request(ours(gid, "cancel", "tcc"))
    theirs(gid, "try", "tcc")
    assert mh.busi_ops(gid) == []


async def test_their_null_compensation_blocks_our_hanging_action(mh: Harness) -> None:
    gid = new_gid()
    theirs(gid, "compensate")
    await mh.request(ours(gid, "action"))
    assert mh.busi_ops(gid) == []


async def test_msg_local_transaction_and_query_prepared_across_clients(mh: Harness) -> None:
    done = new_gid()
    await mh.request(ours(done, "msg", "msg", "00"))
    theirs_query_prepared(done)  # committed: no failure
    assert mh.busi_ops(done) == ["msg"]

    late = new_gid()
    with pytest.raises(DTMFailureError):
        theirs_query_prepared(late)
    with pytest.raises(Duplicated):
        await mh.request(ours(late, "msg", "msg", "00"))
    with pytest.raises(Failure):
        await mh.query_prepared(ours(late, "msg", "msg", "00"))

    theirs_done = new_gid()
    theirs(theirs_done, "msg", "msg", "00")
    await mh.query_prepared(ours(theirs_done, "msg", "msg", "00"))
    assert mh.busi_ops(theirs_done) == ["msg"]
