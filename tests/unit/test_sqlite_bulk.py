"""SQLite's multi-row statements write what the row-by-row ones would (sqlite_bulk)."""

from __future__ import annotations

import sqlite3

from dtmx.core.models import Branch, Op
from dtmx.stores.sql.dialect import SQLITE
from dtmx.stores.sql.rows import BRANCH_INSERT_COLS, branch_columns, branch_params
from dtmx.stores.sql.sqlite_bulk import MAX_PARAMS, branch_inserts

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


def test_bulk_insert_writes_what_row_by_row_statements_do() -> None:
    bulk, single = table(), table()
    bs = branches(2 * MAX_PARAMS)  # several statements
    for sql, args in branch_inserts(branch_columns(bs, SQLITE)):
        bulk.execute(sql, args)
    single.executemany(f"INSERT INTO trans_branch_op ({BRANCH_INSERT_COLS}) VALUES"
                       f" ({', '.join('?' * 10)})", [branch_params(b, SQLITE) for b in bs])
    select = f"SELECT {COLS} FROM trans_branch_op ORDER BY rowid"
    assert bulk.execute(select).fetchall() == single.execute(select).fetchall()
