"""Model <-> row mapping for the SQL stores: column lists, parameters, options JSON, the
compare-and-set UPDATE. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from dtmx.core.models import (
    KV,
    Branch,
    Change,
    Op,
    Protocol,
    Status,
    Transaction,
    TransOptions,
    TransType,
)
from dtmx.core.request import clamp_stored
from dtmx.errors import BadRequest, StoreError
from dtmx.stores.sql.dialect import Dialect

#: Columns written by `create`, in parameter order (id is assigned by the database).
TRANS_INSERT_COLS = (
    "gid, trans_type, status, protocol, query_prepared, custom_data, options, create_time,"
    " update_time, finish_time, rollback_time, next_cron_interval, next_cron_time, owner,"
    " rollback_reason, result, ext_data"
)
#: Columns read back; the first one (id) is the scan position.
TRANS_COLS = "id, " + TRANS_INSERT_COLS
BRANCH_INSERT_COLS = (
    "gid, url, bin_data, branch_id, op, status, create_time, update_time, finish_time,"
    " rollback_time"
)
#: Columns read back: the inserted ones and the number of calls stored (schema v3).
BRANCH_COLS = BRANCH_INSERT_COLS + ", calls"
KV_COLS = "id, cat, k, v, version, create_time, update_time"
#: The global row, parameters from `trans_params`.
INSERT_TRANS = (
    f"INSERT INTO trans_global ({TRANS_INSERT_COLS}) VALUES ({', '.join('?' * 17)})"
)
#: One branch row, parameters from `branch_params`.
INSERT_BRANCH = f"INSERT INTO trans_branch_op ({BRANCH_INSERT_COLS}) VALUES ({', '.join('?' * 10)})"
#: A transaction's branches in insertion order; one `?`: the gid.
SELECT_BRANCHES = f"SELECT {BRANCH_COLS} FROM trans_branch_op WHERE gid = ? ORDER BY id"
#: One branch op's new status; args: status, update_time, finish_time or None, gid,
#: branch_id, op.
UPDATE_BRANCH = (
    "UPDATE trans_branch_op SET status = ?, update_time = ?,"
    " finish_time = COALESCE(?, finish_time) WHERE gid = ? AND branch_id = ? AND op = ?"
)

_INT_OPTIONS = (
    "timeout_to_fail",
    "request_timeout",
    "retry_interval",
    "retry_limit",
    "retry_count",
)


def placeholders(n: int) -> str:
    """`?, ?, ...` for an IN list or a VALUES row of n items."""
    return ", ".join("?" * n)


def options_to_json(o: TransOptions) -> str:
    """DTM's JSON for TransOptions: zero values left out, `concurrent` always present."""
    out: dict[str, Any] = {}
    if o.wait_result:
        out["wait_result"] = True
    for name in _INT_OPTIONS:
        value = getattr(o, name)
        if value:
            out[name] = value
    if o.branch_headers:
        out["branch_headers"] = o.branch_headers
    out["concurrent"] = o.concurrent
    if o.passthrough_headers:
        out["passthrough_headers"] = o.passthrough_headers
    return orjson.dumps(out).decode()


def options_from_json(text: str | None) -> TransOptions:
    """TransOptions from the `options` column; unknown keys (DTM's or future) are ignored."""
    if not text:
        return TransOptions()
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise StoreError(f"stored options are not JSON: {text[:100]!r}") from e
    if not isinstance(raw, dict):
        raise StoreError(f"stored options are not a JSON object: {text[:100]!r}")
    opts = TransOptions(
        wait_result=bool(raw.get("wait_result") or False),
        concurrent=bool(raw.get("concurrent") or False),
        branch_headers=dict(raw.get("branch_headers") or {}),
        passthrough_headers=list(raw.get("passthrough_headers") or []),
    )
    for name in _INT_OPTIONS:
        setattr(opts, name, raw.get(name) or 0)
    return clamp_stored(opts)


def trans_params(t: Transaction, d: Dialect) -> list[Any]:
    """Parameters for TRANS_INSERT_COLS."""
    return [
        t.gid,
        t.trans_type.value,
        t.status.value,
        t.protocol.value,
        t.query_prepared,
        t.custom_data,
        options_to_json(t.options),
        d.ts(t.create_time),
        d.ts(t.update_time),
        d.ts(t.finish_time),
        d.ts(t.rollback_time),
        float(t.next_cron_interval),
        d.ts(t.next_cron_time),
        t.owner,
        t.rollback_reason,
        t.result,
        t.ext_data,
    ]


def branch_params(b: Branch, d: Dialect, now: float | None = None) -> list[Any]:
    """Parameters for BRANCH_INSERT_COLS; `now` fills unset create/update times."""
    return [
        b.gid,
        b.url,
        bytes(b.data),
        b.branch_id,
        b.op.value,
        b.status.value,
        d.ts(b.create_time or now or 0.0),
        d.ts(b.update_time or now or 0.0),
        d.ts(b.finish_time),
        d.ts(b.rollback_time),
    ]


def branch_columns(branches: Sequence[Branch], d: Dialect, now: float | None = None
                   ) -> list[list[Any]]:
    """`branch_params` of all `branches`, column by column (a list per column of
    BRANCH_INSERT_COLS): for thousands of rows, several times faster than row by row."""
    def ts(ts_of: list[float | None]) -> list[Any]:
        return [d.ts(t) for t in ts_of]
    return [
        [b.gid for b in branches],
        [b.url for b in branches],
        [bytes(b.data) for b in branches],
        [b.branch_id for b in branches],
        [b.op.value for b in branches],
        [b.status.value for b in branches],
        ts([b.create_time or now or 0.0 for b in branches]),
        ts([b.update_time or now or 0.0 for b in branches]),
        ts([b.finish_time for b in branches]),
        ts([b.rollback_time for b in branches]),
    ]


@dataclass(frozen=True, slots=True)
class CasUpdate:
    """The arguments of one `Store.update` call, as one item of a batch."""

    gid: str
    now: float
    expect_status: Status
    expect_owner: str | None
    change: Change
    expect_type: TransType | None = None


def cas_update(
    d: Dialect, gid: str, now: float, expect_status: Status, expect_owner: str | None, c: Change,
    expect_type: TransType | None = None,
) -> tuple[str, list[Any]]:
    """The compare-and-set UPDATE of the global row applying `c` (only a row of
    `expect_type`, if given); its WHERE clause ends it, so a caller may add conditions."""
    sets, args = ["update_time = ?"], [d.ts(now)]
    if c.status is not None:
        sets.append("status = ?")
        args.append(c.status.value)
        if c.status is Status.SUCCEED:
            sets.append("finish_time = ?")
            args.append(d.ts(now))
        elif c.status is Status.FAILED:
            sets.append("rollback_time = ?")
            args.append(d.ts(now))
    for col, value in (
        ("next_cron_time", d.ts(c.next_cron_time)),
        ("next_cron_interval", c.next_cron_interval),
        ("owner", c.owner),
        ("rollback_reason", c.rollback_reason),
        ("result", c.result),
    ):
        if value is not None:
            sets.append(f"{col} = ?")
            args.append(value)
    if c.retry_count is not None:
        sets.append(f"options = {d.set_retry_count()}")
        args.append(c.retry_count)
    where = "gid = ? AND status = ?"
    args += [gid, expect_status.value]
    if expect_owner is not None:
        where += " AND owner = ?"
        args.append(expect_owner)
    if expect_type is not None:
        where += " AND trans_type = ?"
        args.append(expect_type.value)
    return f"UPDATE trans_global SET {', '.join(sets)} WHERE {where}", args


def trans_from_row(row: Sequence[Any], d: Dialect) -> Transaction:
    """A Transaction from a row of TRANS_COLS."""
    try:
        return Transaction(
            gid=row[1],
            trans_type=TransType(row[2]),
            status=Status(row[3]),
            protocol=Protocol(row[4] or Protocol.HTTP.value),
            query_prepared=row[5] or "",
            custom_data=row[6] or "",
            options=options_from_json(row[7]),
            create_time=d.from_ts(row[8]) or 0.0,
            update_time=d.from_ts(row[9]) or 0.0,
            finish_time=d.from_ts(row[10]),
            rollback_time=d.from_ts(row[11]),
            next_cron_interval=float(row[12] or 0.0),
            next_cron_time=d.from_ts(row[13]),
            owner=row[14] or "",
            rollback_reason=row[15] or "",
            result=row[16] or "",
            ext_data=row[17] or "",
            id=int(row[0]),
        )
    except ValueError as e:
        raise StoreError(f"unreadable trans_global row for gid {row[1]!r}: {e}") from e


def branch_from_row(row: Sequence[Any], d: Dialect) -> Branch:
    """A Branch from a row of BRANCH_COLS."""
    try:
        return Branch(
            gid=row[0],
            url=row[1],
            data=bytes(row[2] or b""),
            branch_id=row[3],
            op=Op(row[4]),
            status=Status(row[5]),
            create_time=d.from_ts(row[6]) or 0.0,
            update_time=d.from_ts(row[7]) or 0.0,
            finish_time=d.from_ts(row[8]),
            rollback_time=d.from_ts(row[9]),
            calls=int(row[10] or 0),
        )
    except ValueError as e:
        raise StoreError(f"unreadable trans_branch_op row for gid {row[0]!r}: {e}") from e


def kv_from_row(row: Sequence[Any], d: Dialect) -> KV:
    """A KV from a row of KV_COLS."""
    return KV(
        cat=row[1],
        k=row[2],
        v=row[3] or "",
        version=int(row[4] or 1),
        create_time=d.from_ts(row[5]) or 0.0,
        update_time=d.from_ts(row[6]) or 0.0,
    )


def parse_position(position: str) -> int:
    """The id below which a scan continues; '' = from the newest."""
    if not position:
        return 2**63 - 1
    try:
        return int(position)
    except ValueError:
        raise BadRequest(f"invalid position {position!r}") from None
