"""The call history in the SQL stores, statements and row mapping only; pure.

A branch op's first call is kept in its own row (`trans_branch_op`, columns `call_*`,
schema v3) and the number of its calls stored in `calls`: the engine numbers the calls of
an op that has a row (`CallRecord.attempt`), so a call that answers at once writes no
history row, only columns of the row its status change updates anyway (`op_writes` merges
the two per op). Later calls go to table `trans_call` (schema v2) with the number given;
once there are more than `keep`, the DELETE after the INSERT drops what falls between the
first call and the newest `keep - 1`. A call given as 0 (an op without a row: a msg's
query_prepared) is numbered in `trans_call` by the INSERT itself, as schema v2 did.
SQLite and MySQL run these statements inside the update's transaction (MySQL: in its one
script, gated on the compare-and-set); PostgreSQL writes them as CTEs of its batched
update statement (`CALL_CTES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from dtmx.core.models import CallRecord, Op, Outcome
from dtmx.errors import StoreError
from dtmx.stores.op_writes import OpWrite
from dtmx.stores.sql.dialect import Dialect

CALL_COLS = (
    "gid, branch_id, op, attempt, start_time, duration, result, reason, server, next_retry"
)
#: The first call's columns in a branch row, in the order of CALL_COLS' last six.
FIRST_CALL_COLS = (
    "call_start, call_duration, call_result, call_reason, call_server, call_next_retry"
)
#: A transaction's calls: the first calls kept in its branch rows, then its history rows
#: (CALL_COLS); two `?`: the gid, twice.
SELECT_CALLS = (
    f"SELECT gid, branch_id, op, 1, {FIRST_CALL_COLS} FROM trans_branch_op"
    f" WHERE gid = ? AND call_start IS NOT NULL"
    f" UNION ALL SELECT {CALL_COLS} FROM trans_call WHERE gid = ?"
)
_SAME_OP = "gid = ? AND branch_id = ? AND op = ?"
#: One call with the attempt number it was given; args from `insert_call_at_args`. Ends
#: with its SELECT, so a dialect may add `FROM DUAL WHERE ...` (MySQL's gate).
INSERT_CALL_AT = f"INSERT INTO trans_call ({CALL_COLS}) SELECT {', '.join('?' * 10)}"
#: Drop the history rows between the first call and the newest keep - 1 of a call given
#: its number; args from `trim_below_args` (written only once the number passes keep).
TRIM_CALLS_BELOW = f"DELETE FROM trans_call WHERE {_SAME_OP} AND attempt > 1 AND attempt <= ?"
#: One call given as 0, numbered after the op's history rows; args from
#: `insert_call_args`. Ends with its SELECT, so a dialect may add `FROM DUAL WHERE ...`.
INSERT_CALL = (
    f"INSERT INTO trans_call ({CALL_COLS}) SELECT ?, ?, ?,"
    f" COALESCE((SELECT MAX(attempt) FROM trans_call WHERE {_SAME_OP}), 0) + 1,"
    " ?, ?, ?, ?, ?, ?"
)
#: After INSERT_CALL: drop what lies between the first call and the newest keep - 1; args
#: from `trim_calls_args`. (The newest attempt is read through a derived table: MySQL refuses
#: a DELETE whose subquery reads its own table directly.)
TRIM_CALLS = (
    f"DELETE FROM trans_call WHERE {_SAME_OP} AND attempt > 1 AND attempt <= (SELECT top"
    f" FROM (SELECT MAX(attempt) AS top FROM trans_call WHERE {_SAME_OP}) AS newest) - ?"
)
#: PostgreSQL: CTEs appending the history calls of the updates that matched (CTE `g`
#: returns their gids; a call given as 0 numbered after the op's rows) and trimming; args:
#: the arrays of `call_arrays`. A statement's CTEs all see the rows as they were before
#: it, so the trim counts from the attempts `c` returns.
CALL_CTES = (
    " c AS (INSERT INTO trans_call (" + CALL_COLS + ")"
    " SELECT v.gid, v.branch_id, v.op, CASE WHEN v.attempt > 0 THEN v.attempt ELSE"
    " COALESCE((SELECT MAX(x.attempt) FROM trans_call AS x"
    " WHERE x.gid = v.gid AND x.branch_id = v.branch_id AND x.op = v.op), 0)"
    " + row_number() OVER (PARTITION BY v.gid, v.branch_id, v.op, v.attempt > 0"
    " ORDER BY v.ord) END,"
    " v.start_time, v.duration, v.result, v.reason, v.server, v.next_retry"
    " FROM unnest(?::text[], ?::text[], ?::text[], ?::int[], ?::timestamptz[], ?::float8[],"
    " ?::text[], ?::text[], ?::text[], ?::timestamptz[]) WITH ORDINALITY"
    " AS v(gid, branch_id, op, attempt, start_time, duration, result, reason, server,"
    " next_retry, ord)"
    " WHERE v.gid IN (SELECT gid FROM g) RETURNING gid, branch_id, op, attempt),"
    " k AS (SELECT DISTINCT ON (gid, branch_id, op) v.gid, v.branch_id, v.op, v.keep"
    " FROM unnest(?::text[], ?::text[], ?::text[], ?::int[]) AS v(gid, branch_id, op, keep)),"
    " t AS (DELETE FROM trans_call AS o USING (SELECT c.gid, c.branch_id, c.op,"
    " MAX(c.attempt) AS top FROM c GROUP BY c.gid, c.branch_id, c.op) AS n, k"
    " WHERE o.gid = n.gid AND o.branch_id = n.branch_id AND o.op = n.op"
    " AND k.gid = n.gid AND k.branch_id = n.branch_id AND k.op = n.op"
    " AND o.attempt > 1 AND o.attempt <= n.top - k.keep + 1 RETURNING 1)"
)


@lru_cache(maxsize=8)
def update_branch_sql(status: bool, first: bool, count: bool) -> str:
    """The UPDATE of one branch row writing the given parts; args from
    `update_branch_args`. Its WHERE clause ends it, so a dialect may add conditions."""
    sets = []
    if status:
        sets.append("status = ?, update_time = ?, finish_time = COALESCE(?, finish_time)")
    if first:
        sets.append(", ".join(f"{col.strip()} = ?" for col in FIRST_CALL_COLS.split(",")))
    if count:
        sets.append("calls = ?")
    return (f"UPDATE trans_branch_op SET {', '.join(sets)}"
            " WHERE gid = ? AND branch_id = ? AND op = ?")


def update_branch_args(gid: str, now: float, w: OpWrite, d: Dialect) -> list[Any]:
    """The arguments of `update_branch_sql` for `w`'s parts."""
    args: list[Any] = []
    if w.status is not None:
        args += [w.status.value, d.ts(now), d.ts(now) if w.status.finished else None]
    c = w.first
    if c is not None:
        args += [d.ts(c.start), float(c.duration), c.outcome.value, c.reason, c.server,
                 d.ts(c.next_retry)]
    if w.count is not None:
        args.append(w.count)
    args += [gid, w.branch_id, w.op.value]
    return args


def update_branch_columns(gid: str, now: float, ws: Sequence[OpWrite], d: Dialect
                          ) -> list[list[Any]]:
    """`update_branch_args` of all `ws`, which write the same parts, column by column."""
    n, ts = len(ws), d.ts(now)
    cols: list[list[Any]] = []
    if ws[0].status is not None:
        statuses = [w.status for w in ws if w.status is not None]
        cols += [[s.value for s in statuses], [ts] * n,
                 [ts if s.finished else None for s in statuses]]
    if ws[0].first is not None:
        fs = [w.first for w in ws if w.first is not None]
        cols += [[d.ts(c.start) for c in fs], [float(c.duration) for c in fs],
                 [c.outcome.value for c in fs], [c.reason for c in fs], [c.server for c in fs],
                 [d.ts(c.next_retry) for c in fs]]
    if ws[0].count is not None:
        cols.append([w.count for w in ws])
    cols += [[gid] * n, [w.branch_id for w in ws], [w.op.value for w in ws]]
    return cols


def update_branch(gid: str, now: float, w: OpWrite, d: Dialect) -> tuple[str, list[Any]]:
    """The UPDATE of `w`'s branch row with its arguments."""
    sql = update_branch_sql(w.status is not None, w.first is not None, w.count is not None)
    return sql, update_branch_args(gid, now, w, d)


def insert_call_at_args(gid: str, c: CallRecord, d: Dialect) -> list[Any]:
    """The arguments of INSERT_CALL_AT."""
    return [gid, c.branch_id, c.op.value, c.attempt, d.ts(c.start), float(c.duration),
            c.outcome.value, c.reason, c.server, d.ts(c.next_retry)]


def trim_below_args(gid: str, c: CallRecord, keep: int) -> list[Any]:
    """The arguments of TRIM_CALLS_BELOW after call `c` (numbered past `keep`)."""
    return [gid, c.branch_id, c.op.value, c.attempt - keep + 1]


def insert_call_args(gid: str, c: CallRecord, d: Dialect) -> list[Any]:
    """The arguments of INSERT_CALL."""
    return [gid, c.branch_id, c.op.value, gid, c.branch_id, c.op.value, d.ts(c.start),
            float(c.duration), c.outcome.value, c.reason, c.server, d.ts(c.next_retry)]


def trim_calls_args(gid: str, c: CallRecord, keep: int) -> list[Any]:
    """The arguments of TRIM_CALLS: the newest keep - 1 stay (and the first)."""
    return [gid, c.branch_id, c.op.value, gid, c.branch_id, c.op.value, keep - 1]


def call_arrays(items: Sequence[tuple[str, int, Sequence[CallRecord]]], d: Dialect
                ) -> list[Any]:
    """The arguments of CALL_CTES from (gid, keep, history calls) of each update."""
    rows = [(gid, c, keep) for gid, keep, calls in items for c in calls]
    return [
        [g for g, _, _ in rows],
        [c.branch_id for _, c, _ in rows],
        [c.op.value for _, c, _ in rows],
        [c.attempt for _, c, _ in rows],
        [d.ts(c.start) for _, c, _ in rows],
        [float(c.duration) for _, c, _ in rows],
        [c.outcome.value for _, c, _ in rows],
        [c.reason for _, c, _ in rows],
        [c.server for _, c, _ in rows],
        [d.ts(c.next_retry) for _, c, _ in rows],
        [g for g, _, _ in rows],
        [c.branch_id for _, c, _ in rows],
        [c.op.value for _, c, _ in rows],
        [k for _, _, k in rows],
    ]


def call_from_row(row: Sequence[Any], d: Dialect) -> CallRecord:
    """A CallRecord from a row of CALL_COLS."""
    try:
        return CallRecord(
            branch_id=row[1],
            op=Op(row[2]),
            attempt=int(row[3]),
            start=d.from_ts(row[4]) or 0.0,
            duration=float(row[5] or 0.0),
            outcome=Outcome(row[6]),
            reason=row[7] or "",
            server=row[8] or "",
            next_retry=d.from_ts(row[9]),
        )
    except ValueError as e:
        raise StoreError(f"unreadable trans_call row for gid {row[0]!r}: {e}") from e


def in_order(calls: list[CallRecord]) -> list[CallRecord]:
    """Calls as `Store.get_calls` returns them."""
    return sorted(calls, key=lambda c: (c.start, c.branch_id, c.op.value, c.attempt))
