"""PostgreSQL's batched compare-and-set updates (`PostgresStore._update_many`): one
statement for several updates, their rows given as parallel arrays through unnest(...).
Pure: statements and their arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from dtmx.core.models import CallRecord, Status
from dtmx.stores.op_writes import OpWrite, op_writes
from dtmx.stores.sql.calls import CALL_CTES, FIRST_CALL_COLS, call_arrays
from dtmx.stores.sql.dialect import POSTGRES
from dtmx.stores.sql.rows import CasUpdate

_U = ("gid text, expect_status text, expect_owner text, now timestamptz, status text,"
      " next_cron_time timestamptz, next_cron_interval float8, owner text,"
      " rollback_reason text, result text, retry_count bigint, expect_type text")
#: Several compare-and-set updates (distinct gids) in one statement: one row of the
#: arrays per update (columns as in `_U`), a column left NULL keeps the stored value as
#: in `Change`; the branch updates ({b}) of the rows that matched; the gids that matched.
_UPDATE_MANY = (
    "WITH u AS (SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::timestamptz[],"
    " ?::text[], ?::timestamptz[], ?::float8[], ?::text[], ?::text[], ?::text[], ?::bigint[],"
    " ?::text[])"
    f" AS u({', '.join(c.split()[0] for c in _U.split(', '))})),"
    " g AS (UPDATE trans_global AS t SET update_time = u.now,"
    " status = COALESCE(u.status, t.status),"
    f" finish_time = CASE WHEN u.status = '{Status.SUCCEED.value}' THEN u.now"
    " ELSE t.finish_time END,"
    f" rollback_time = CASE WHEN u.status = '{Status.FAILED.value}' THEN u.now"
    " ELSE t.rollback_time END,"
    " next_cron_time = COALESCE(u.next_cron_time, t.next_cron_time),"
    " next_cron_interval = COALESCE(u.next_cron_interval, t.next_cron_interval),"
    " owner = COALESCE(u.owner, t.owner),"
    " rollback_reason = COALESCE(u.rollback_reason, t.rollback_reason),"
    " result = COALESCE(u.result, t.result),"
    " options = CASE WHEN u.retry_count IS NULL THEN t.options ELSE"
    " (jsonb_set(COALESCE(NULLIF(t.options, ''), '{}')::jsonb, '{retry_count}',"
    " to_jsonb(u.retry_count)))::text END"
    " FROM u WHERE t.gid = u.gid AND t.status = u.expect_status"
    " AND (u.expect_owner IS NULL OR t.owner = u.expect_owner)"
    " AND (u.expect_type IS NULL OR t.trans_type = u.expect_type) RETURNING t.gid),"
    "{b} SELECT gid FROM g"
)
_B_STATUS = (
    " b AS (UPDATE trans_branch_op AS bt SET status = v.status, update_time = v.now,"
    " finish_time = COALESCE(v.finish_time, bt.finish_time)"
    " FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::timestamptz[],"
    " ?::timestamptz[]) AS v(gid, branch_id, op, status, now, finish_time)"
    " WHERE bt.gid = v.gid AND bt.branch_id = v.branch_id AND bt.op = v.op"
    " AND v.gid IN (SELECT gid FROM g) RETURNING 1)"
)
#: The branch rows' writes of updates with calls (`OpWrite`s, one JSON array per op, see
#: `_op_row`): a NULL status or count keeps the stored one, the first call is written if
#: `first`. One JSON text rather than 14 array parameters: asyncpg spends ~1 us on each
#: array element and ~2.5 us on each time (a batch of 33 ops: ~0.6 ms of the loop's time).
_B_CALLS = (
    " b AS (UPDATE trans_branch_op AS bt SET status = COALESCE(v.status, bt.status),"
    " update_time = CASE WHEN v.status IS NULL THEN bt.update_time ELSE v.now END,"
    " finish_time = COALESCE(v.finish_time, bt.finish_time),"
    " calls = COALESCE(v.calls, bt.calls), "
    + ", ".join(f"{col} = CASE WHEN v.first THEN v.{col} ELSE bt.{col} END"
                for col in (c.strip() for c in FIRST_CALL_COLS.split(",")))
    + " FROM (SELECT e->>0 AS gid, e->>1 AS branch_id, e->>2 AS op, e->>3 AS status,"
    " to_timestamp((e->>4)::float8) AS now, to_timestamp((e->>5)::float8) AS finish_time,"
    " (e->>6)::int AS calls, (e->>7)::bool AS first,"
    " to_timestamp((e->>8)::float8) AS call_start, (e->>9)::float8 AS call_duration,"
    " e->>10 AS call_result, e->>11 AS call_reason, e->>12 AS call_server,"
    " to_timestamp((e->>13)::float8) AS call_next_retry"
    " FROM jsonb_array_elements(?::jsonb) AS e) AS v"
    " WHERE bt.gid = v.gid AND bt.branch_id = v.branch_id AND bt.op = v.op"
    " AND v.gid IN (SELECT gid FROM g) RETURNING 1)"
)
#: Several updates whose branch ops get statuses; args from `update_many_args`.
UPDATE_MANY = _UPDATE_MANY.replace("{b}", _B_STATUS)
#: Several updates with calls, each op's first call in its row.
UPDATE_MANY_CALLS = _UPDATE_MANY.replace("{b}", _B_CALLS)
#: ... and calls for the history too (args: UPDATE_MANY_CALLS', then CALL_CTES').
UPDATE_MANY_HISTORY = _UPDATE_MANY.replace("{b}", f"{_B_CALLS},{CALL_CTES}")


def update_many_args(items: Sequence[CasUpdate]) -> list[Any]:
    """The arguments of UPDATE_MANY."""
    ts = POSTGRES.ts
    rows = [
        (u.gid, u.expect_status.value, u.expect_owner, ts(u.now),
         c.status and c.status.value, ts(c.next_cron_time), c.next_cron_interval, c.owner,
         c.rollback_reason, c.result, c.retry_count, u.expect_type and u.expect_type.value)
        for u in items
        for c in (u.change,)
    ]
    out: list[Any] = [list(col) for col in columns(rows, 12)]
    if not any(u.change.calls for u in items):
        branches = [
            (u.gid, b.branch_id, b.op.value, b.status.value, ts(u.now),
             ts(u.now) if b.status.finished else None)
            for u in items
            for b in u.change.branches
        ]
        return out + [list(col) for col in columns(branches, 6)]
    ops: list[list[Any]] = []
    history: list[tuple[str, int, list[CallRecord]]] = []
    for u in items:
        writes, calls = op_writes(u.change)
        ops += [_op_row(u.gid, u.now, w) for w in writes]
        if calls:
            history.append((u.gid, u.change.keep_calls, calls))
    # times as epoch floats (orjson writes them exactly; to_timestamp reads them back)
    out.append(orjson.dumps(ops).decode())
    if history:
        out += call_arrays(history, POSTGRES)
    return out


def _op_row(gid: str, now: float, w: OpWrite) -> list[Any]:
    """One op of _B_CALLS: gid, branch_id, op, status, now, finish_time, calls, first,
    then the first call's start, duration, result, reason, server, next_retry."""
    st, c = w.status, w.first
    head = [gid, w.branch_id, w.op, st, now,
            now if st is not None and st.finished else None, w.count]
    if c is None:
        return [*head, False, None, None, None, None, None, None]
    return [*head, True, c.start, float(c.duration), c.outcome, c.reason, c.server,
            c.next_retry]


def update_many_sql(items: Sequence[CasUpdate]) -> str:
    """The statement `update_many_args` gives the arguments of."""
    if not any(u.change.calls for u in items):
        return UPDATE_MANY
    if any(c.attempt != 1 for u in items for c in u.change.calls):
        return UPDATE_MANY_HISTORY
    return UPDATE_MANY_CALLS


def columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    """The rows' columns (`width` empty ones if there are no rows), one array each."""
    return list(zip(*rows, strict=True)) if rows else [()] * width
