"""SQLite's multi-row statements write what the row-by-row ones would (sqlite_bulk)."""

from __future__ import annotations

import sqlite3

from dtmx.core.models import Branch, BranchUpdate, CallRecord, Change, Op, Outcome, Status
from dtmx.stores.op_writes import OpWrite
from dtmx.stores.sql.calls import update_branch_args, update_branch_columns, update_branch_sql
from dtmx.stores.sql.dialect import SQLITE
from dtmx.stores.sql.rows import BRANCH_INSERT_COLS, branch_columns, branch_params
from dtmx.stores.sql.sqlite import _update_statements
from dtmx.stores.sql.sqlite_bulk import MAX_PARAMS, branch_inserts, branch_updates

COLS = BRANCH_INSERT_COLS + ", calls, call_start, call_duration, call_result, call_reason," \
    " call_server, call_next_retry"


def table() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE trans_branch_op ({COLS})")
    return db


def branches(n: int) -> list[Branch]:
    return [Branch(gid="g", branch_id=f"{i:04d}", op=(Op.ACTION, Op.COMPENSATE)[i % 2],
                   url="u" if i % 3 else f"u{i}", data=b"{}", create_time=1.5,
                   update_time=1.5 + (i % 2)) for i in range(n)]


def test_branch_columns_are_branch_params_by_column() -> None:
    bs = branches(7)
    assert [list(r) for r in zip(*branch_columns(bs, SQLITE, 9.0), strict=True)] == [
        branch_params(b, SQLITE, 9.0) for b in bs]


def test_update_branch_columns_are_update_branch_args_by_column() -> None:
    call = CallRecord("01", Op.ACTION, 5.0, 0.5, Outcome.SUCCESS, "", "h", None, 1)
    for ws in (
        [OpWrite(f"{i:02d}", Op.ACTION, Status.SUCCEED, call, 1) for i in range(3)],
        [OpWrite(f"{i:02d}", Op.COMPENSATE, (Status.FAILED, Status.PREPARED)[i % 2])
         for i in range(3)],
        [OpWrite("01", Op.ACTION, None, None, 3)],
    ):
        assert [list(r) for r in zip(*update_branch_columns("g", 9.0, ws, SQLITE),
                                     strict=True)] == [
            update_branch_args("g", 9.0, w, SQLITE) for w in ws]


def test_bulk_insert_and_update_write_what_row_by_row_statements_do() -> None:
    bulk, single = table(), table()
    bs = branches(2 * MAX_PARAMS)  # several statements
    for sql, args in branch_inserts(branch_columns(bs, SQLITE)):
        bulk.execute(sql, args)
    single.executemany(f"INSERT INTO trans_branch_op ({BRANCH_INSERT_COLS}) VALUES"
                       f" ({', '.join('?' * 10)})", [branch_params(b, SQLITE) for b in bs])
    # every third row, a shared status and time, a finish time on some, varying counts
    rows = [["succeed", 3.0, 3.0 if i % 4 else None, i % 3, "g", b.branch_id, b.op.value]
            for i, b in enumerate(bs[::3])]
    parts = (True, False, True)
    for sql, args in branch_updates(parts, [list(c) for c in zip(*rows, strict=True)]):
        bulk.execute(sql, args)
    single.executemany(update_branch_sql(*parts), rows)
    select = f"SELECT {COLS} FROM trans_branch_op ORDER BY rowid"
    assert bulk.execute(select).fetchall() == single.execute(select).fetchall()


def test_an_op_twice_in_one_update_goes_row_by_row_last_wins() -> None:
    twice = Change(branches=(BranchUpdate("01", Op.ACTION, Status.FAILED),
                             BranchUpdate("01", Op.ACTION, Status.SUCCEED)))
    w = _update_statements(("UPDATE x", []), "g", 1.0, twice, SQLITE)
    assert not w.one and [len(rows) for _, rows in w.many] == [2]
    once = Change(branches=(BranchUpdate("01", Op.ACTION, Status.SUCCEED),
                            BranchUpdate("02", Op.ACTION, Status.SUCCEED)))
    w = _update_statements(("UPDATE x", []), "g", 1.0, once, SQLITE)
    assert len(w.one) == 1 and not w.many
