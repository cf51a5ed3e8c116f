"""What only the SQL stores have: schema versions and migrations, DTM-compatible tables,
driver errors translated to ours. Real servers; the databases/schemas used here are ours."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from dtmx.core.models import (
    Branch,
    BranchUpdate,
    CallRecord,
    Change,
    Op,
    Outcome,
    Status,
    Transaction,
    TransOptions,
    TransType,
)
from dtmx.errors import StoreError, StoreUnavailable
from dtmx.stores.sql import SqlStore, migrate
from dtmx.stores.sql.calls import INSERT_CALL_AT, insert_call_at_args
from dtmx.stores.sql.mysql import MysqlStore
from dtmx.stores.sql.postgres import PostgresStore
from dtmx.stores.sql.schema import _read, code_version, migrations, split_statements
from dtmx.stores.sql.sqlite import SqliteStore
from tests.support.util import free_port

SCHEMA_DB = "dtmx_test_store_schema"  # a database / schema of its own: tests here break it

Factory = Callable[..., SqlStore]


async def _drop_scratch(kind: str) -> None:
    s = _factory(kind, Path("/nonexistent"))()
    await s.backend.open(create=True)
    try:
        async with s.backend.session() as ex:
            if kind == "mysql":
                await ex.execute(f"DROP DATABASE IF EXISTS {SCHEMA_DB}", None)
            else:
                await ex.execute(f"DROP SCHEMA IF EXISTS {SCHEMA_DB} CASCADE", None)
    finally:
        await s.backend.close()


def _factory(kind: str, tmp_path: Path) -> Factory:
    def make(**kw: object) -> SqlStore:
        if kind == "sqlite":
            return SqliteStore(str(tmp_path / "schema.db"), **kw)  # type: ignore[arg-type]
        if kind == "mysql":
            return MysqlStore(
                "127.0.0.1", 3306, "root", "", SCHEMA_DB, pool_size=2, **kw  # type: ignore[arg-type]
            )
        return PostgresStore(
            "127.0.0.1", 5432, "postgres", "", "postgres", SCHEMA_DB, pool_size=2, **kw  # type: ignore[arg-type]
        )

    return make


@pytest.fixture(params=["sqlite", "mysql", "postgres"])
async def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """A factory of stores on an empty database (schema) of their own."""
    kind: str = request.param
    if kind != "sqlite":
        await _drop_scratch(kind)
    yield _factory(kind, tmp_path)
    if kind != "sqlite":
        await _drop_scratch(kind)


async def _set_version(s: SqlStore, version: int) -> None:
    async with s.backend.session() as ex:
        await ex.execute("DELETE FROM dtmx_schema_version")
        await ex.execute(
            "INSERT INTO dtmx_schema_version (version, applied_at) VALUES (?, NULL)", [version]
        )


async def test_first_open_creates_schema_and_reopen_is_idempotent(fresh: Factory) -> None:
    s = fresh()
    await s.open()
    try:
        kind = s.backend.dialect.kind
        assert await s.schema_version() == code_version(kind) >= 1
        assert await s.migrate() == []  # nothing to do
    finally:
        await s.close()
    again = fresh()
    await again.open()
    await again.close()


async def test_concurrent_first_opens_both_succeed(fresh: Factory) -> None:
    stores = [fresh(), fresh(), fresh()]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        assert await stores[0].schema_version() == code_version(stores[0].backend.dialect.kind)
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_schema_behind_code_asks_for_migrate(fresh: Factory) -> None:
    s = fresh()
    await s.open()
    await _set_version(s, 0)
    await s.close()
    old = fresh()
    with pytest.raises(StoreError, match="dtmx migrate"):
        await old.open()
    assert await migrate(old) == list(range(1, code_version(old.backend.dialect.kind) + 1))
    await old.open()  # now current
    await old.close()


async def test_upgrade_from_schema_v1_keeps_the_data_and_adds_the_call_history(
    fresh: Factory,
) -> None:
    """A database as a dtmx of schema v1 left it (no trans_call): refused until `dtmx
    migrate`, which adds only v2; its transactions then take calls like new ones."""
    s = fresh()
    kind = s.backend.dialect.kind
    await s.backend.open(create=True)
    async with s.backend.transaction() as tx:
        for stmt in split_statements(_read(f"{kind.value}_version_table.sql")):
            await tx.execute(stmt, None)
        for stmt in split_statements(migrations(kind)[0].sql):
            await tx.execute(stmt, None)
        await tx.execute("INSERT INTO dtmx_schema_version (version, applied_at)"
                         " VALUES (1, NULL)", None)
    g = "v1-" + uuid.uuid4().hex
    t = Transaction(gid=g, trans_type=TransType.SAGA, status=Status.SUBMITTED,
                    create_time=1e9, update_time=1e9)
    assert await s.create(trans=t, branches=[])  # written the way v1 code wrote it
    await s.backend.close()
    with pytest.raises(StoreError, match="dtmx migrate"):
        await fresh().open()
    assert await migrate(fresh()) == list(range(2, code_version(kind) + 1))
    new = fresh()
    await new.open()
    try:
        assert (await new.get(gid=g)) == t
        call = CallRecord("01", Op.ACTION, 1e9, 0.5, Outcome.ERROR, "503", "h:1:a", 1e9 + 5)
        assert await new.update(gid=g, now=1e9 + 1, expect_status=Status.SUBMITTED,
                                expect_owner=None, change=Change(calls=(call,)))
        assert [(c.attempt, c.reason) for c in await new.get_calls(gid=g)] == [(1, "503")]
    finally:
        await new.close()


def _branches(g: str) -> list[Branch]:
    return [Branch(g, bid, op, f"http://b/{bid}", b"{}", create_time=1e9, update_time=1e9)
            for bid in ("01", "02") for op in (Op.ACTION, Op.COMPENSATE)]


async def _history_rows(s: SqlStore, g: str) -> list[tuple[str, str, int]]:
    async with s.backend.session() as ex:
        rows = await ex.fetch("SELECT branch_id, op, attempt FROM trans_call WHERE gid = ?"
                              " ORDER BY branch_id, op, attempt", [g])
    return [(r[0], r[1], int(r[2])) for r in rows]


async def test_upgrade_from_schema_v2_moves_first_calls_into_the_branch_rows(
    fresh: Factory,
) -> None:
    """A database as a dtmx of schema v2 left it (every call a trans_call row): `dtmx
    migrate` adds v3, moves each op's first call into its row and counts its calls; the
    history reads as before and the engine numbers on from the count."""
    s = fresh()
    kind = s.backend.dialect.kind
    d = s.backend.dialect
    await s.backend.open(create=True)
    async with s.backend.transaction() as tx:
        for stmt in split_statements(_read(f"{kind.value}_version_table.sql")):
            await tx.execute(stmt, None)
        for mig in migrations(kind)[:2]:
            for stmt in split_statements(mig.sql):
                await tx.execute(stmt, None)
            await tx.execute("INSERT INTO dtmx_schema_version (version, applied_at)"
                             " VALUES (?, NULL)", [mig.version])
    g = "v2-" + uuid.uuid4().hex
    t = Transaction(gid=g, trans_type=TransType.SAGA, status=Status.SUBMITTED,
                    create_time=1e9, update_time=1e9)
    assert await s.create(trans=t, branches=_branches(g))  # as v2 code wrote them
    old = [CallRecord("01", Op.ACTION, 1e9 + a, 0.5, Outcome.ERROR, f"e{a}", "h:1:a",
                      1e9 + a + 0.9, a) for a in (1, 4, 5)]
    old += [CallRecord("02", Op.ACTION, 1e9 + 6, 0.25, Outcome.SUCCESS, "", "h:1:a", None, 1),
            CallRecord("00", Op.MSG, 1e9 - 1, 0.1, Outcome.ONGOING, "", "h:1:a", None, 1)]
    async with s.backend.transaction() as tx:
        for c in old:
            await tx.execute(INSERT_CALL_AT, insert_call_at_args(g, c, d))
    await s.backend.close()
    assert await migrate(fresh()) == list(range(3, code_version(kind) + 1))
    new = fresh()
    await new.open()
    try:
        assert sorted(await new.get_calls(gid=g), key=lambda c: c.start) == sorted(
            old, key=lambda c: c.start)
        assert {b.key: b.calls for b in await new.get_branches(gid=g)} == {
            ("01", Op.ACTION): 5, ("02", Op.ACTION): 1, ("01", Op.COMPENSATE): 0,
            ("02", Op.COMPENSATE): 0}
        # the ops with a row keep their first call there; the msg's stays
        assert await _history_rows(new, g) == [("00", "msg", 1), ("01", "action", 4),
                                               ("01", "action", 5)]
        nxt = CallRecord("01", Op.ACTION, 1e9 + 9, 0.5, Outcome.SUCCESS, "", "h:1:b", None, 6)
        assert await new.update(gid=g, now=1e9 + 10, expect_status=Status.SUBMITTED,
                                expect_owner=None, change=Change(calls=(nxt,), keep_calls=3))
        assert [(c.branch_id, c.attempt) for c in await new.get_calls(gid=g)
                if c.op is Op.ACTION] == [("01", 1), ("01", 5), ("02", 1), ("01", 6)]
    finally:
        await new.close()


async def test_calls_answered_at_once_write_no_history_rows(fresh: Factory) -> None:
    s = fresh()
    await s.open()
    try:
        g = "h-" + uuid.uuid4().hex
        t = Transaction(gid=g, trans_type=TransType.SAGA, status=Status.SUBMITTED,
                        create_time=1e9, update_time=1e9)
        assert await s.create(trans=t, branches=_branches(g))
        calls = tuple(CallRecord(bid, Op.ACTION, 1e9 + i, 0.01, Outcome.SUCCESS, "", "h:1:a",
                                 None, 1) for i, bid in enumerate(("01", "02")))
        assert await s.update(
            gid=g, now=1e9 + 1, expect_status=Status.SUBMITTED, expect_owner=None,
            change=Change(status=Status.SUCCEED,
                          branches=tuple(BranchUpdate(c.branch_id, Op.ACTION, Status.SUCCEED)
                                         for c in calls), calls=calls))
        assert await _history_rows(s, g) == []
        assert await s.get_calls(gid=g) == list(calls)
    finally:
        await s.close()


async def test_schema_ahead_of_code_is_refused(fresh: Factory) -> None:
    s = fresh()
    await s.open()
    await _set_version(s, 999)
    await s.close()
    with pytest.raises(StoreError, match="upgrade dtmx"):
        await fresh().open()


async def test_create_false_on_empty_database_asks_for_migrate(fresh: Factory) -> None:
    # the database / schema exists (an operator made it) but holds no dtmx tables
    s = fresh()
    await s.backend.open(create=True)
    await s.backend.close()
    with pytest.raises(StoreError, match="dtmx migrate"):
        await fresh(create=False).open()


async def test_tables_are_dtm_compatible(fresh: Factory) -> None:
    s = fresh()
    await s.open()
    try:
        t = Transaction(
            gid="dtm-" + uuid.uuid4().hex,
            trans_type=TransType.SAGA,
            status=Status.SUBMITTED,
            options=TransOptions(retry_interval=10, timeout_to_fail=60, branch_headers={"a": "b"}),
        )
        assert await s.create(trans=t, branches=[])
        dtm_columns = (
            "id, gid, trans_type, status, query_prepared, protocol, create_time, update_time,"
            " finish_time, rollback_time, options, custom_data, next_cron_interval,"
            " next_cron_time, owner, ext_data, result, rollback_reason"
        )
        async with s.backend.session() as ex:
            rows = await ex.fetch(
                f"SELECT {dtm_columns} FROM trans_global WHERE gid = ?", [t.gid]
            )
            await ex.fetch(
                "SELECT id, gid, url, data, bin_data, branch_id, op, status, finish_time,"
                " rollback_time, create_time, update_time FROM trans_branch_op"
            )
            await ex.fetch("SELECT id, cat, k, v, version, create_time, update_time FROM kv")
        options = orjson.loads(rows[0][10])
        assert options == {
            "retry_interval": 10,
            "timeout_to_fail": 60,
            "branch_headers": {"a": "b"},
            "concurrent": False,
        }
    finally:
        await s.close()


@pytest.mark.parametrize("cls", [MysqlStore, PostgresStore])
async def test_unreachable_server_is_store_unavailable(cls: Factory) -> None:
    s = cls(host="127.0.0.1", port=free_port(), db="x")
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(s.open(), 15)


async def test_sqlite_in_missing_directory_is_store_unavailable(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "no" / "such" / "dir" / "x.db"))
    with pytest.raises(StoreUnavailable):
        await s.open()


@pytest.mark.parametrize("kind", ["sqlite", "mysql", "postgres"])
async def test_closed_store_is_unavailable(kind: str, tmp_path: Path) -> None:
    from tests.integration.stores.conftest import open_current, sql_store

    s = sql_store(kind, tmp_path)
    await open_current(s)
    await s.ping()
    await s.close()
    with pytest.raises(StoreUnavailable):
        await s.ping()


async def test_bad_scan_position_is_rejected(tmp_path: Path) -> None:
    from dtmx.core.models import ScanFilter
    from dtmx.errors import BadRequest

    s = SqliteStore(str(tmp_path / "p.db"))
    await s.open()
    try:
        with pytest.raises(BadRequest):
            await s.scan(position="abc", limit=5, filters=ScanFilter())
    finally:
        await s.close()


def test_unknown_driver_is_a_config_error() -> None:
    from dtmx.errors import ConfigError
    from dtmx.settings import load

    with pytest.raises(ConfigError, match=r"Store\.Driver"):
        load(env={"STORE_DRIVER": "oracle"})
    with pytest.raises(ConfigError, match=r"Store\.Url"):
        load(env={"STORE_URL": "oracle://h/db"})


@pytest.mark.parametrize("kind", ["mysql", "postgres"])
async def test_killed_connection_is_unavailable_then_recovers(kind: str) -> None:
    """A connection the server drops surfaces as StoreUnavailable (never a driver error)
    and the pool replaces it."""
    from tests.integration.stores.conftest import TEST_DB, open_current
    from tests.support.util import aeventually

    if kind == "mysql":
        s = MysqlStore("127.0.0.1", 3306, "root", "", TEST_DB, pool_size=1)
        admin = MysqlStore("127.0.0.1", 3306, "root", "", TEST_DB, pool_size=1)
        who, kill = "SELECT CONNECTION_ID()", "KILL ?"
    else:
        s = PostgresStore("127.0.0.1", 5432, "postgres", "", "postgres", TEST_DB, pool_size=1)
        admin = PostgresStore(
            "127.0.0.1", 5432, "postgres", "", "postgres", TEST_DB, pool_size=1
        )
        who, kill = "SELECT pg_backend_pid()", "SELECT pg_terminate_backend(?)"
    await open_current(s)
    await admin.open()
    try:
        async with s.backend.session() as ex:
            conn_id = int((await ex.fetch(who))[0][0])
        async with admin.backend.session() as ex:
            await ex.execute(kill, [conn_id])
        # the dead connection may be handed out once (StoreUnavailable); then it is replaced
        with contextlib.suppress(StoreUnavailable):
            await s.get(gid="whatever")

        async def works() -> bool:
            try:
                return await s.get(gid="whatever") is None
            except StoreUnavailable:
                return False

        assert await aeventually(works, timeout=10)
    finally:
        await s.close()
        await admin.close()
