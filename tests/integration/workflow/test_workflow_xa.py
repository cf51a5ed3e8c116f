"""DTM's XA workflow scenarios by name (XaAction, XaRollback, XaResume) on MariaDB and
PostgreSQL, and an XA transaction prepared by a crashed run but never recorded; each with
the server on every store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from dtmx.client import Failure, Ongoing
from dtmx.client.workflow import Workflow, Workflows
from tests.integration.workflow.conftest import WfApp, wait_status
from tests.support import xa_busi
from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.services import STORES


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """The server on every store (SQLite, MySQL, PostgreSQL, Redis: ~3 s each); the XA
    steps' own databases (MariaDB, PostgreSQL) vary by `db`."""
    xa_busi.setup_tables()
    workdir = str(tmp_path_factory.mktemp("dtmx"))
    with scratch_store(request.param, "dtmx_wfx", workdir) as block, \
            ServerProcess(store=block, workdir=workdir) as s:
        yield s


@pytest.fixture(params=xa_busi.DBS)
def db(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def wfs(app: WfApp) -> AsyncIterator[Workflows]:
    app.workflows.barrier_table = xa_busi.BARRIER
    yield app.workflows


def connect(db: str) -> Any:
    def open_() -> AbstractAsyncContextManager[Any]:
        return xa_busi._mysql() if db == "mysql" else xa_busi._pg()

    return open_


async def insert(conn: Any, gid: str, name: str, amount: int) -> None:
    sql = f"INSERT INTO {xa_busi.BUSI} (gid, name, amount) VALUES "
    if hasattr(conn, "fetchval"):  # asyncpg
        await conn.execute(sql + "($1, $2, $3)", gid, name, amount)
    else:
        async with conn.cursor() as cur:
            await cur.execute(sql + "(%s, %s, %s)", (gid, name, amount))


def transfer(wfs: Workflows, db: str, gid: str, fail_in: bool = False,
             ongoing_at: set[int] | None = None) -> None:
    hits = ongoing_at or set()

    def ongoing(point: int) -> None:
        if point in hits:
            hits.discard(point)
            raise Ongoing(f"ongoing at {point}")

    @wfs.register(gid)
    async def wf_fn(wf: Workflow, data: bytes) -> None:
        async def out(conn: Any) -> bytes:
            ongoing(0)
            await insert(conn, gid, "out", -30)
            return b"out done"

        async def into(conn: Any) -> None:
            ongoing(1)
            await insert(conn, gid, "in", 30)
            if fail_in:
                raise Failure("in refused")

        assert await wf.new_branch().xa(connect(db), out) == b"out done"
        await wf.new_branch().xa(connect(db), into)
        ongoing(2)


async def test_xa_action(server: ServerProcess, wfs: Workflows, db: str, gid: str) -> None:
    transfer(wfs, db, gid)
    await wfs.execute(gid, gid)
    assert server.status(gid) == "succeed"
    assert xa_busi.busi_rows(db, gid) == [("in", 30), ("out", -30)]
    assert xa_busi.prepared_xids(db, gid) == []
    ops = {(b["branch_id"], b["op"]) for b in server.query(gid)["branches"]}
    assert {("01", "commit"), ("02", "commit")} <= ops


async def test_xa_rollback(server: ServerProcess, wfs: Workflows, db: str, gid: str) -> None:
    transfer(wfs, db, gid, fail_in=True)
    with pytest.raises(Failure, match="in refused"):
        await wfs.execute(gid, gid)
    assert server.status(gid) == "failed"
    assert xa_busi.busi_rows(db, gid) == []
    assert xa_busi.prepared_xids(db, gid) == []
    # the rollback left its barrier row: a late action of either branch would be refused
    assert xa_busi.barrier_reasons(db, gid) == {"01": "rollback", "02": "rollback"}


async def test_xa_resume(server: ServerProcess, wfs: Workflows, db: str, gid: str) -> None:
    transfer(wfs, db, gid, ongoing_at={0, 1, 2})
    with pytest.raises(Ongoing):
        await wfs.execute(gid, gid)
    await wait_status(server, gid, "succeed")
    assert xa_busi.busi_rows(db, gid) == [("in", 30), ("out", -30)]
    assert xa_busi.prepared_xids(db, gid) == []


async def test_xa_prepared_but_not_recorded(
    server: ServerProcess, wfs: Workflows, db: str, gid: str
) -> None:
    # As if a run had crashed between PREPARE and the record: a prepared transaction
    # named gid-01 holds a row nobody recorded. The replay rolls it back and runs anew.
    xid = f"{gid}-01"
    conn = xa_busi.sync_conn(db)
    try:
        row = f"INSERT INTO {xa_busi.BUSI} VALUES ('{gid}', 'orphan', 1)"
        if db == "mysql":
            with conn.cursor() as cur:
                for sql in (f"XA START '{xid}'", row, f"XA END '{xid}'", f"XA PREPARE '{xid}'"):
                    cur.execute(sql)
        else:
            for sql in ("BEGIN", row, f"PREPARE TRANSACTION '{xid}'"):
                conn.execute(sql)
    finally:
        conn.close()
    assert xa_busi.prepared_xids(db, gid) == [xid]
    transfer(wfs, db, gid)
    await wfs.execute(gid, gid)
    assert xa_busi.busi_rows(db, gid) == [("in", 30), ("out", -30)]
    assert xa_busi.prepared_xids(db, gid) == []
