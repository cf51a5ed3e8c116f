"""XA end to end: DTM's XA scenarios against a real server, MariaDB and PostgreSQL.

Each branch is an XA transaction on a fresh connection, prepared by the action and finished
by the server's second-phase call on another connection (tests/support/xa_busi.py).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from dtmx.client import DtmClient, DtmError, Failure, Xa, xa_global_transaction
from dtmx.client._xa_local import XaStep, xa_sql
from dtmx.client.barrier import Dialect
from dtmx.client.sync import SyncDtmClient
from dtmx.client.sync import xa_global_transaction as sync_xa_global_transaction
from dtmx.client.sync import xa_local_transaction as sync_xa_local_transaction
from tests.support import xa_busi
from tests.support.server import ServerProcess
from tests.support.util import eventually
from tests.support.xa_busi import XaBranches, busi_rows, prepared_xids

AMOUNT = 30
# The restart test on each server store: SQLite with both resource managers, every other
# store with one of them (its own kind where it has one), to keep a ~2 s scenario lean.
CRASH_DB = {"mysql": "mysql", "postgres": "pg", "redis": "mysql"}


def new_gid(label: str) -> str:
    return f"xa-{label}-{uuid.uuid4().hex[:12]}"


def ops(server: ServerProcess, gid: str) -> list[tuple[str, str, str]]:
    return [(b["branch_id"], b["op"], b["status"]) for b in server.query(gid)["branches"]]


async def two_branches(xa: Xa, branches: XaBranches, db: str) -> None:
    body = {"gid": xa.gid, "amount": AMOUNT}
    await xa.call_branch(body, branches.url(db, "TransOut"))
    await xa.call_branch(body, branches.url(db, "TransIn"))


async def test_xa_normal(server: ServerProcess, branches: XaBranches, client: DtmClient,
                         db: str) -> None:
    gid = new_gid("normal")
    await xa_global_transaction(client, gid, lambda xa: two_branches(xa, branches, db))
    server.wait_status(gid, "succeed")
    assert ops(server, gid) == [
        ("01", "rollback", "prepared"), ("01", "commit", "succeed"),
        ("02", "rollback", "prepared"), ("02", "commit", "succeed"),
    ]
    assert busi_rows(db, gid) == [("TransIn", AMOUNT), ("TransOut", AMOUNT)]
    assert prepared_xids(db, gid) == []


async def test_xa_duplicate_second_phase(server: ServerProcess, branches: XaBranches,
                                         client: DtmClient, db: str) -> None:
    """TransOut is committed by hand before the server's commit: the second call is a no-op."""
    gid = new_gid("dup")

    async def fn(xa: Xa) -> None:
        body = {"gid": gid, "amount": AMOUNT}
        await xa.call_branch(body, branches.url(db, "TransOut"))
        assert prepared_xids(db, gid) == [f"{gid}-01"]
        dialect = Dialect.MYSQL if db == "mysql" else Dialect.POSTGRES
        commit = xa_sql(dialect, XaStep.COMMIT, f"{gid}-01")
        assert commit is not None
        xa_busi.check(db, commit)  # as a crashed branch's restart might have done
        await xa.call_branch(body, branches.url(db, "TransIn"))

    await xa_global_transaction(client, gid, fn)
    server.wait_status(gid, "succeed")
    assert busi_rows(db, gid) == [("TransIn", AMOUNT), ("TransOut", AMOUNT)]
    assert prepared_xids(db, gid) == []


async def test_xa_rollback(server: ServerProcess, branches: XaBranches, client: DtmClient,
                           db: str) -> None:
    gid = new_gid("rollback")
    branches.fail.add("TransIn")
    with pytest.raises(Failure):
        await xa_global_transaction(client, gid, lambda xa: two_branches(xa, branches, db))
    server.wait_status(gid, "failed")
    # Only TransOut registered (TransIn failed before it could); its rollback ran.
    assert ops(server, gid) == [("01", "rollback", "succeed"), ("01", "commit", "prepared")]
    assert busi_rows(db, gid) == []
    assert prepared_xids(db, gid) == []
    # The rollback marked the action's barrier: a late duplicate action cannot prepare.
    assert xa_busi.barrier_reasons(db, gid) == {"01": "rollback", "02": "rollback"} or \
        xa_busi.barrier_reasons(db, gid) == {"01": "rollback"}


async def test_xa_local_error(server: ServerProcess, client: DtmClient) -> None:
    gid = new_gid("local")

    async def fn(xa: Xa) -> None:
        raise RuntimeError("an error")

    with pytest.raises(RuntimeError, match="an error"):
        await xa_global_transaction(client, gid, fn)
    server.wait_status(gid, "failed")
    assert ops(server, gid) == []


async def test_xa_timeout(server: ServerProcess, branches: XaBranches, client: DtmClient,
                          db: str) -> None:
    """The global transaction outlives timeout_to_fail: the server rolls the branch back and
    the late submit is refused."""
    gid = new_gid("timeout")

    async def fn(xa: Xa) -> None:
        await xa.call_branch({"gid": gid, "amount": AMOUNT}, branches.url(db, "TransOut"))
        await asyncio.to_thread(server.wait_status, gid, "failed")

    xa = client.xa(gid).set_options(timeout_to_fail=1)
    with pytest.raises(DtmError):
        async with xa:
            await fn(xa)
    t = server.query(gid)["transaction"]
    assert t["status"] == "failed"
    assert t["rollback_reason"].startswith("Timeout after")
    assert busi_rows(db, gid) == []
    assert prepared_xids(db, gid) == []


async def test_crash_left_prepared_xa_is_finished(
    server: ServerProcess, branches: XaBranches, client: DtmClient, db: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Both branches prepared, then the branch service is gone when the commits come and the
    server is killed: the prepared transactions wait in the database; a new server on the
    same store commits them once the branches answer again."""
    driver = server.conf["Store"]["Driver"]
    if db != CRASH_DB.get(driver, db):
        pytest.skip(f"the restart (~2 s) runs on the {driver} store with {CRASH_DB[driver]} only")
    gid = new_gid("crash")
    branches.down.update({"TransOut", "TransIn"})
    body = {"gid": gid, "amount": AMOUNT}

    async def fn(xa: Xa) -> None:
        branches.down.clear()
        await xa.call_branch(body, branches.url(db, "TransOut"))
        await xa.call_branch(body, branches.url(db, "TransIn"))
        branches.down.update({"TransOut", "TransIn"})

    await xa_global_transaction(client, gid, fn)
    eventually(lambda: server.status(gid) == "submitted")
    assert prepared_xids(db, gid) == [f"{gid}-01", f"{gid}-02"]
    server.kill()
    try:
        assert prepared_xids(db, gid) == [f"{gid}-01", f"{gid}-02"]
        assert busi_rows(db, gid) == []  # prepared, not committed
        branches.down.clear()
        workdir = str(tmp_path_factory.mktemp("xa-again"))
        again = ServerProcess(store=server.conf["Store"], workdir=workdir).start()
        try:
            again.wait_status(gid, "succeed")
        finally:
            again.stop()
    finally:
        server.start()
    assert busi_rows(db, gid) == [("TransIn", AMOUNT), ("TransOut", AMOUNT)]
    assert prepared_xids(db, gid) == []


def test_sync_xa_global_transaction(server: ServerProcess, branches: XaBranches) -> None:
    gid = new_gid("sync")
    with SyncDtmClient(server.url) as client:
        def fn(xa: object) -> str:
            for name in ("TransOut", "TransIn"):
                xa.call_branch({"gid": gid, "amount": 1}, branches.url("pg", name))  # type: ignore[attr-defined]
            return "done"

        assert sync_xa_global_transaction(client, gid, fn) == "done"
    server.wait_status(gid, "succeed")
    assert busi_rows("pg", gid) == [("TransIn", 1), ("TransOut", 1)]



def test_sync_xa_local_transaction(server: ServerProcess, branches: XaBranches, db: str) -> None:
    """The blocking branch side on PyMySQL / psycopg; the second phase, served by the async
    branch service on another connection, finishes what it prepared."""
    gid = new_gid("synclocal")
    query = {"gid": gid, "trans_type": "xa", "branch_id": "01", "op": "action",
             "phase2_url": branches.url(db, "TransOut")}

    def busi(conn: object) -> None:
        sql = f"INSERT INTO {xa_busi.BUSI} (gid, name, amount) VALUES (%s, 'Local', 7)"
        if db == "mysql":
            with conn.cursor() as cur:  # type: ignore[attr-defined]
                cur.execute(sql, (gid,))
        else:
            conn.execute(sql, (gid,))  # type: ignore[attr-defined]

    with SyncDtmClient(server.url) as client, client.xa(gid):
        conn = xa_busi.sync_conn(db)
        try:
            sync_xa_local_transaction(client, query, conn, busi, table=xa_busi.BARRIER)
        finally:
            conn.close()
        assert prepared_xids(db, gid) == [f"{gid}-01"]
    server.wait_status(gid, "succeed")
    assert busi_rows(db, gid) == [("Local", 7)]
    assert prepared_xids(db, gid) == []
