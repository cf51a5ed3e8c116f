"""The call history in the SQL stores: table `trans_call` (schema v2), one row per call
kept. Statements and row mapping only; pure.

A call's attempt number is the branch op's highest stored one plus one, read by the INSERT
itself; the DELETE after it drops what falls between the first call and the newest
`keep - 1`. SQLite and MySQL run the two per call inside the update's transaction (MySQL:
in its one script, gated on the compare-and-set); PostgreSQL writes them as CTEs of its
batched update statement (`CALL_CTES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dtmx.core.models import CallRecord, Op, Outcome
from dtmx.errors import StoreError
from dtmx.stores.sql.dialect import Dialect

CALL_COLS = (
    "gid, branch_id, op, attempt, start_time, duration, result, reason, server, next_retry"
)
#: A transaction's calls; one `?`: the gid.
SELECT_CALLS = f"SELECT {CALL_COLS} FROM trans_call WHERE gid = ?"
_SAME_OP = "gid = ? AND branch_id = ? AND op = ?"
#: One call with the next attempt number; args from `insert_call_args`. Ends with its
#: SELECT, so a dialect may add `FROM DUAL WHERE ...` (MySQL's gate).
INSERT_CALL = (
    f"INSERT INTO trans_call ({CALL_COLS}) SELECT ?, ?, ?,"
    f" COALESCE((SELECT MAX(attempt) FROM trans_call WHERE {_SAME_OP}), 0) + 1,"
    " ?, ?, ?, ?, ?, ?"
)
#: Drop what lies between the first call and the newest keep - 1; args from
#: `trim_calls_args`. (The newest attempt is read through a derived table: MySQL refuses
#: a DELETE whose subquery reads its own table directly.)
TRIM_CALLS = (
    f"DELETE FROM trans_call WHERE {_SAME_OP} AND attempt > 1 AND attempt <= (SELECT top"
    f" FROM (SELECT MAX(attempt) AS top FROM trans_call WHERE {_SAME_OP}) AS newest) - ?"
)
#: PostgreSQL: CTEs appending the calls of the updates that matched (CTE `g` returns their
#: gids) and trimming; args: the arrays of `call_arrays`. A statement's CTEs all see the
#: rows as they were before it, so the trim counts from the attempts `c` returns.
CALL_CTES = (
    " c AS (INSERT INTO trans_call (" + CALL_COLS + ")"
    " SELECT v.gid, v.branch_id, v.op, COALESCE((SELECT MAX(x.attempt) FROM trans_call AS x"
    " WHERE x.gid = v.gid AND x.branch_id = v.branch_id AND x.op = v.op), 0)"
    " + row_number() OVER (PARTITION BY v.gid, v.branch_id, v.op ORDER BY v.ord),"
    " v.start_time, v.duration, v.result, v.reason, v.server, v.next_retry"
    " FROM unnest(?::text[], ?::text[], ?::text[], ?::timestamptz[], ?::float8[], ?::text[],"
    " ?::text[], ?::text[], ?::timestamptz[]) WITH ORDINALITY"
    " AS v(gid, branch_id, op, start_time, duration, result, reason, server, next_retry,"
    " ord)"
    " WHERE v.gid IN (SELECT gid FROM g) RETURNING gid, branch_id, op, attempt),"
    " k AS (SELECT DISTINCT ON (gid, branch_id, op) v.gid, v.branch_id, v.op, v.keep"
    " FROM unnest(?::text[], ?::text[], ?::text[], ?::int[]) AS v(gid, branch_id, op, keep)),"
    " t AS (DELETE FROM trans_call AS o USING (SELECT c.gid, c.branch_id, c.op,"
    " MAX(c.attempt) AS top FROM c GROUP BY c.gid, c.branch_id, c.op) AS n, k"
    " WHERE o.gid = n.gid AND o.branch_id = n.branch_id AND o.op = n.op"
    " AND k.gid = n.gid AND k.branch_id = n.branch_id AND k.op = n.op"
    " AND o.attempt > 1 AND o.attempt <= n.top - k.keep + 1 RETURNING 1)"
)


def insert_call_args(gid: str, c: CallRecord, d: Dialect) -> list[Any]:
    """The arguments of INSERT_CALL."""
    return [gid, c.branch_id, c.op.value, gid, c.branch_id, c.op.value, d.ts(c.start),
            float(c.duration), c.outcome.value, c.reason, c.server, d.ts(c.next_retry)]


def trim_calls_args(gid: str, c: CallRecord, keep: int) -> list[Any]:
    """The arguments of TRIM_CALLS: the newest keep - 1 stay (and the first)."""
    return [gid, c.branch_id, c.op.value, gid, c.branch_id, c.op.value, keep - 1]


def call_arrays(items: Sequence[tuple[str, int, Sequence[CallRecord]]], d: Dialect
                ) -> list[Any]:
    """The arguments of CALL_CTES from (gid, keep, calls) of each update."""
    rows = [(gid, c, keep) for gid, keep, calls in items for c in calls]
    return [
        [g for g, _, _ in rows],
        [c.branch_id for _, c, _ in rows],
        [c.op.value for _, c, _ in rows],
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
