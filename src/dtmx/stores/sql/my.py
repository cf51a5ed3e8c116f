"""MySQL/MariaDB scripts for the hot verbs: one transaction, one round trip each.

Each builder returns the statements (SQL with `?` placeholders, args) that
`MysqlBackend.script` sends at once between START TRANSACTION and COMMIT. MySQL has no
UPDATE ... RETURNING and no data-modifying CTEs, so the statements after a compare-and-set
UPDATE are gated on it through a session variable: with CLIENT_FOUND_ROWS, ROW_COUNT()
counts the rows the UPDATE matched (the PostgreSQL forms are in `pg`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dtmx.core.models import Status
from dtmx.stores.sql.conn import Statement
from dtmx.stores.sql.rows import (
    BRANCH_COLS,
    BRANCH_INSERT_COLS,
    TRANS_COLS,
    UPDATE_BRANCH,
    placeholders,
)

_REMEMBER_MATCHED: Statement = ("SET @dtmx_matched = ROW_COUNT()", ())
_IF_MATCHED = "@dtmx_matched > 0"
#: Branch rows per multi-row INSERT (10 parameters each; well under any limit).
_INSERT_CHUNK = 500


def insert_branches(rows: Sequence[Sequence[Any]], *, if_matched: bool = False
                    ) -> list[Statement]:
    """Multi-row INSERTs of branch rows; with `if_matched`, only if the compare-and-set
    before matched."""
    out: list[Statement] = []
    for i in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[i:i + _INSERT_CHUNK]
        if if_matched:
            one = f"SELECT {placeholders(10)} FROM DUAL WHERE {_IF_MATCHED}"
            values = " UNION ALL ".join([one] * len(chunk))
        else:
            values = "VALUES " + ", ".join([f"({placeholders(10)})"] * len(chunk))
        out.append((f"INSERT INTO trans_branch_op ({BRANCH_INSERT_COLS}) {values}",
                    [v for r in chunk for v in r]))
    return out


def create(insert_trans: Statement, branch_rows: Sequence[Sequence[Any]]) -> list[Statement]:
    """The global row, then its branches. A duplicate gid fails statement 0."""
    return [insert_trans, *insert_branches(branch_rows)]


def update(global_update: Statement, branch_rows: Sequence[Sequence[Any]]) -> list[Statement]:
    """The compare-and-set UPDATE (statement 0, its row count says whether it matched),
    then the branch updates, applied only if it did. Rows are UPDATE_BRANCH's args."""
    gated = UPDATE_BRANCH + f" AND {_IF_MATCHED}"
    return [global_update, _REMEMBER_MATCHED, *((gated, r) for r in branch_rows)]


#: Where `take`'s results are: the global row, then its branches.
TAKE_TRANS, TAKE_BRANCHES = 2, 3


def take(global_update: Statement, gid: str) -> list[Statement]:
    """The compare-and-set UPDATE, then the row and its branches read back if it matched."""
    return [
        global_update,
        _REMEMBER_MATCHED,
        (f"SELECT {TRANS_COLS} FROM trans_global WHERE gid = ? AND {_IF_MATCHED}", [gid]),
        (f"SELECT {BRANCH_COLS} FROM trans_branch_op WHERE gid = ? AND {_IF_MATCHED}"
         " ORDER BY id", [gid]),
    ]


def add_branches(gid: str, expect_status: Status, branch_rows: Sequence[Sequence[Any]]
                 ) -> list[Statement]:
    """Lock the global row if it is still in `expect_status` and insert the branches only
    then; statement 0's row count says whether it was. (A no-op UPDATE takes the row lock
    and counts the match; SELECT ... INTO placement differs between MySQL and MariaDB.)"""
    return [
        ("UPDATE trans_global SET update_time = update_time WHERE gid = ? AND status = ?",
         [gid, expect_status.value]),
        _REMEMBER_MATCHED,
        *insert_branches(branch_rows, if_matched=True),
    ]
