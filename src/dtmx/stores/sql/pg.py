"""PostgreSQL single-statement forms of the hot verbs (data-modifying CTEs).

Each returns (sql with `?` placeholders, args); the statement's one row, one column says
whether the global row matched (1) or not (0). Branch rows travel as parallel arrays
through unnest(... ) WITH ORDINALITY, inserted in the given order so ids keep it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dtmx.core.models import Branch, BranchUpdate, Status, Transaction
from dtmx.stores.sql.dialect import POSTGRES
from dtmx.stores.sql.rows import (
    BRANCH_COLS,
    BRANCH_INSERT_COLS,
    TRANS_COLS,
    TRANS_INSERT_COLS,
    placeholders,
    trans_params,
)

_D = POSTGRES

_BRANCH_INSERT = (
    f"INSERT INTO trans_branch_op ({BRANCH_INSERT_COLS})"
    " SELECT ?, u.url, u.bin_data, u.branch_id, u.op, u.status, u.create_time,"
    " u.update_time, u.finish_time, u.rollback_time"
    " FROM unnest(?::text[], ?::bytea[], ?::text[], ?::text[], ?::text[],"
    " ?::timestamptz[], ?::timestamptz[], ?::timestamptz[], ?::timestamptz[])"
    " WITH ORDINALITY AS u(url, bin_data, branch_id, op, status, create_time, update_time,"
    " finish_time, rollback_time, ord)"
    " WHERE EXISTS (SELECT 1 FROM g) ORDER BY u.ord RETURNING 1"
)


def _branch_arrays(gid: str, branches: Sequence[Branch], now: float | None) -> list[Any]:
    return [
        gid,
        [b.url for b in branches],
        [bytes(b.data) for b in branches],
        [b.branch_id for b in branches],
        [b.op.value for b in branches],
        [b.status.value for b in branches],
        [_D.ts(b.create_time or now or 0.0) for b in branches],
        [_D.ts(b.update_time or now or 0.0) for b in branches],
        [_D.ts(b.finish_time) for b in branches],
        [_D.ts(b.rollback_time) for b in branches],
    ]


def create(trans: Transaction, branches: Sequence[Branch]) -> tuple[str, list[Any]]:
    """Insert the global row unless the gid exists, and its branches only if it was new."""
    sql = (
        f"WITH g AS (INSERT INTO trans_global ({TRANS_INSERT_COLS}) VALUES ({placeholders(17)})"
        " ON CONFLICT (gid) DO NOTHING RETURNING id),"
        f" b AS ({_BRANCH_INSERT})"
        " SELECT count(*) FROM g"
    )
    return sql, [*trans_params(trans, _D), *_branch_arrays(trans.gid, branches, None)]


def add_branches(
    gid: str, now: float, branches: Sequence[Branch], expect_status: Status
) -> tuple[str, list[Any]]:
    """Insert branches if the global row has `expect_status`, locking it meanwhile so a
    concurrent status change cannot slip between the check and the insert.

    The lock is taken with a no-op UPDATE rather than FOR UPDATE: it gives the row a new
    version (xmin), which is how `take` notices a registration it waited for."""
    sql = (
        "WITH g AS (UPDATE trans_global SET update_time = update_time"
        " WHERE gid = ? AND status = ? RETURNING id),"
        f" b AS ({_BRANCH_INSERT})"
        " SELECT count(*) FROM g"
    )
    return sql, [gid, expect_status.value, *_branch_arrays(gid, branches, now)]


def update_with_branches(
    global_sql: str,
    global_args: list[Any],
    gid: str,
    now: float,
    branches: Sequence[BranchUpdate],
) -> tuple[str, list[Any]]:
    """The conditional global UPDATE, then the branch updates only if it matched."""
    sql = (
        f"WITH g AS ({global_sql} RETURNING id),"
        " b AS (UPDATE trans_branch_op AS t SET status = u.status, update_time = ?,"
        " finish_time = COALESCE(u.finish_time, t.finish_time)"
        " FROM unnest(?::text[], ?::text[], ?::text[], ?::timestamptz[])"
        " AS u(branch_id, op, status, finish_time)"
        " WHERE t.gid = ? AND t.branch_id = u.branch_id AND t.op = u.op"
        " AND EXISTS (SELECT 1 FROM g) RETURNING 1)"
        " SELECT count(*) FROM g"
    )
    args = [
        *global_args,
        _D.ts(now),
        [b.branch_id for b in branches],
        [b.op.value for b in branches],
        [b.status.value for b in branches],
        [_D.ts(now) if b.status.finished else None for b in branches],
        gid,
    ]
    return sql, args


#: How many leading columns of a `take` row belong to the global transaction.
TAKE_TRANS_WIDTH = len(TRANS_COLS.split(","))
_TAKE_BRANCH_COLS = ", ".join(f"b.{c.strip()}" for c in BRANCH_COLS.split(","))


def take(global_sql: str, global_args: list[Any], gid: str) -> tuple[str, list[Any]]:
    """The conditional global UPDATE and a read of the updated row with its branches.

    One row per branch (global columns first, TAKE_TRANS_WIDTH of them), ordered by branch
    id; one row with NULL branch columns if there are none; no row if the UPDATE matched
    nothing. The branches are read from the statement's snapshot, taken when it began: had
    the UPDATE waited for a concurrent `add_branches` to commit, that snapshot would miss
    the new branches. So the UPDATE also requires the row version (xmin) the snapshot saw,
    and matches nothing when the row changed meanwhile; the caller's retry sees it all.
    """
    sql = (
        f"WITH g AS ({global_sql} AND xmin = (SELECT xmin FROM trans_global WHERE gid = ?)"
        f" RETURNING {TRANS_COLS})"
        f" SELECT g.*, {_TAKE_BRANCH_COLS} FROM g"
        " LEFT JOIN trans_branch_op AS b ON b.gid = g.gid ORDER BY b.id"
    )
    return sql, [*global_args, gid]
