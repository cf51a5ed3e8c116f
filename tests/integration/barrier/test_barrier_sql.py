"""The SQL barrier on every supported driver against real SQLite, MariaDB and PostgreSQL.

Each test is one scenario of DTM's barrier contract; the `h` fixture runs it once per driver.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dtmx.client.barrier import BranchBarrier, Dialect, Duplicated, Failure
from tests.integration.barrier.barrier_backends import Boom, Harness, new_gid


def bb(
    h: Harness, gid: str, op: str, trans_type: str = "saga", branch: str = "01"
) -> BranchBarrier:
    """A fresh barrier, as each incoming branch request builds one."""
    return BranchBarrier(trans_type=trans_type, gid=gid, branch_id=branch, op=op, table=h.table)


async def test_action_runs_once(h: Harness) -> None:
    gid = new_gid()
    await h.request(bb(h, gid, "action"))
    assert h.busi_ops(gid) == ["action"]
    assert h.barrier_rows(gid) == {("01", "action", "01", "action")}


async def test_action_then_compensate_both_run(h: Harness) -> None:
    gid = new_gid()
    await h.request(bb(h, gid, "action"))
    await h.request(bb(h, gid, "compensate"))
    assert h.busi_ops(gid) == ["action", "compensate"]
    assert h.barrier_rows(gid) == {
        ("01", "action", "01", "action"),
        ("01", "compensate", "01", "compensate"),
    }


async def test_null_compensation_skips_business(h: Harness) -> None:
    gid = new_gid()
    await h.request(bb(h, gid, "compensate"))
    assert h.busi_ops(gid) == []
    # The origin row, written by the compensation, is what later blocks a hanging action.
    assert h.barrier_rows(gid) == {
        ("01", "action", "01", "compensate"),
        ("01", "compensate", "01", "compensate"),
    }


@pytest.mark.parametrize(
    ("trans_type", "cancel", "try_"),
    [
        ("tcc", "cancel", "try"),
        ("saga", "compensate", "action"),
        ("workflow", "rollback", "action"),
    ],
)
async def test_hanging_request_skipped(h: Harness, trans_type: str, cancel: str, try_: str) -> None:
    gid = new_gid()
    await h.request(bb(h, gid, cancel, trans_type))
    await h.request(bb(h, gid, try_, trans_type))
    assert h.busi_ops(gid) == []


async def test_duplicate_request_skipped(h: Harness) -> None:
    gid = new_gid()
    await h.request(bb(h, gid, "try", "tcc"))
    await h.request(bb(h, gid, "try", "tcc"))
    await h.request(bb(h, gid, "confirm", "tcc"))
    await h.request(bb(h, gid, "confirm", "tcc"))
    assert h.busi_ops(gid) == ["confirm", "try"]


async def test_concurrent_duplicates_run_once(h: Harness) -> None:
    gid = new_gid()
    await asyncio.gather(*(h.request(bb(h, gid, "action")) for _ in range(3)))
    assert h.busi_ops(gid) == ["action"]


async def test_business_error_rolls_back_and_retry_runs(h: Harness) -> None:
    gid = new_gid()
    with pytest.raises(Boom):
        await h.request(bb(h, gid, "action"), fail=True)
    assert h.busi_ops(gid) == []
    assert h.barrier_rows(gid) == set()
    await h.request(bb(h, gid, "action"))
    assert h.busi_ops(gid) == ["action"]


async def test_barrier_id_counts_calls_on_one_barrier(h: Harness) -> None:
    gid = new_gid()
    barrier = bb(h, gid, "action")
    conn = await h.open()
    try:
        await h.call(barrier, conn)
        await h.call(barrier, conn)
    finally:
        await h.close(conn)
    assert h.busi_ops(gid) == ["action", "action"]
    assert {r[2] for r in h.barrier_rows(gid)} == {"01", "02"}


def msg_bb(h: Harness, gid: str) -> BranchBarrier:
    """The barrier of a msg's local transaction (DTM's DoAndSubmit: branch 00, op msg)."""
    return bb(h, gid, "msg", "msg", branch="00")


async def test_query_prepared_before_local_transaction(h: Harness) -> None:
    gid = new_gid()
    with pytest.raises(Failure):
        await h.query_prepared(msg_bb(h, gid))
    assert h.barrier_rows(gid) == {("00", "msg", "01", "rollback")}
    # The local transaction arriving late must not commit its business any more.
    with pytest.raises(Duplicated):
        await h.request(msg_bb(h, gid))
    assert h.busi_ops(gid) == []
    with pytest.raises(Failure):
        await h.query_prepared(msg_bb(h, gid))


async def test_query_prepared_after_commit(h: Harness) -> None:
    gid = new_gid()
    await h.request(msg_bb(h, gid))
    assert h.busi_ops(gid) == ["msg"]
    await h.query_prepared(msg_bb(h, gid))  # no Failure: committed
    with pytest.raises(Duplicated):
        await h.request(msg_bb(h, gid))
    assert h.busi_ops(gid) == ["msg"]


async def test_query_prepared_waits_for_in_flight_local_transaction(h: Harness) -> None:
    gid = new_gid()
    entered, release = threading.Event(), threading.Event()
    conn = await h.open()
    try:
        local = asyncio.create_task(h.call(msg_bb(h, gid), conn, hold=(entered, release)))
        assert await asyncio.to_thread(entered.wait, 10)
        query = asyncio.create_task(h.query_prepared(msg_bb(h, gid)))
        # The query must wait on the uncommitted local transaction's row (a bounded wait that
        # proves it blocks; there is nothing to poll for).
        done, _ = await asyncio.wait({query}, timeout=0.2)
        assert not done
        release.set()
        await local
        await query  # saw the committed local transaction: no Failure
    finally:
        release.set()
        await h.close(conn)
    assert h.busi_ops(gid) == ["msg"]


async def test_wrong_kind_of_connection_is_refused(h: Harness) -> None:
    conn = await h.open()
    try:
        barrier = bb(h, new_gid(), "action")
        with pytest.raises(TypeError):
            if h.sync:
                await barrier.call(conn, lambda c: asyncio.sleep(0))
            else:
                barrier.call_sync(conn, lambda c: None)
    finally:
        await h.close(conn)


async def _outer_transaction(h: Harness, conn: Any) -> Callable[[], Awaitable[None]]:
    """Open a transaction the application's way; return how to commit it."""
    if h.name == "asyncpg":
        tx = conn.transaction()
        await tx.start()
        return tx.commit  # type: ignore[no-any-return]
    if h.name in ("aiosqlite", "sqlite3"):
        result = conn.execute("BEGIN")
        if inspect.isawaitable(result):
            await result
    elif h.name.startswith("sqlalchemy"):
        result = conn.begin()
        if inspect.isawaitable(result):
            await result
    else:  # psycopg: any statement opens the implicit transaction
        result = conn.execute("SELECT 1")
        if inspect.isawaitable(result):
            await result

    async def commit() -> None:
        done = conn.commit()
        if inspect.isawaitable(done):
            await done

    return commit


async def test_inside_an_open_transaction_uses_a_savepoint(h: Harness) -> None:
    if h.dialect is Dialect.MYSQL and not h.name.startswith("sqlalchemy"):
        # SQLAlchemy's begin_nested is a SAVEPOINT on MySQL too; the raw drivers BEGIN.
        pytest.skip("MySQL has no nested transactions: BEGIN ends the open one (documented)")
    gid = new_gid()
    conn = await h.open()
    try:
        commit = await _outer_transaction(h, conn)
        with pytest.raises(Boom):
            await h.call(bb(h, gid, "action"), conn, fail=True)  # rolls back to the savepoint
        await h.call(bb(h, gid, "action"), conn)
        assert h.busi_ops(gid) == []  # not committed yet: the caller owns the transaction
        await commit()
    finally:
        await h.close(conn)
    assert h.busi_ops(gid) == ["action"]
    assert h.barrier_rows(gid) == {("01", "action", "01", "action")}
