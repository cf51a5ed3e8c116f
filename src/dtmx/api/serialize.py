"""Our rows in the JSON shapes DTM's query/all/scanKV routes answer with.

Serialising a stored row never raises, whatever the row holds: validation keeps out-of-range
values out of the store, and this end clamps anything that got in anyway (an older version,
another tool), so one row can never make `/query` or `/all` fail.
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from typing import Any

from dtmx.core.models import KV, Branch, CallRecord, Transaction
from dtmx.core.request import stored_option
from dtmx.security.redact import redact_headers

# the range of times a datetime (and every DTM client) can represent
_MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC).timestamp()
_MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def iso(t: float | None) -> str | None:
    """ISO-8601 UTC with milliseconds; None for unset; clamped into years 1970..9999."""
    if t is None or t == 0 or not isinstance(t, int | float) or math.isnan(t):
        return None
    t = min(max(float(t), _MIN_TIME), _MAX_TIME)
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds")


def _num(v: float) -> int | float:
    if not math.isfinite(v):
        return 0
    return int(v) if v == int(v) and abs(v) < 2**53 else v


def _omit_empty(d: dict[str, Any]) -> dict[str, Any]:
    # DTM's structs are `omitempty`: leave out what is empty, as its clients expect
    return {k: v for k, v in d.items() if v not in (None, "", 0, False, [], {})}


def trans_json(t: Transaction) -> dict[str, Any]:
    """A transaction as DTM's JSON (empty fields omitted, `id` always there)."""
    o = t.options
    # `id` is never omitted: DTM's field has no omitempty (0 on stores without row ids)
    return {"id": t.id} | _omit_empty(
        {
            "create_time": iso(t.create_time),
            "update_time": iso(t.update_time),
            "gid": t.gid,
            "trans_type": t.trans_type.value,
            "status": t.status.value,
            "query_prepared": t.query_prepared,
            "protocol": t.protocol.value,
            "finish_time": iso(t.finish_time),
            "rollback_time": iso(t.rollback_time),
            "result": t.result,
            "rollback_reason": t.rollback_reason,
            "custom_data": t.custom_data,
            "next_cron_interval": _num(t.next_cron_interval),
            "next_cron_time": iso(t.next_cron_time),
            "owner": t.owner,
            "ext_data": t.ext_data,
            "wait_result": o.wait_result,
            "timeout_to_fail": stored_option(o.timeout_to_fail),
            "request_timeout": stored_option(o.request_timeout),
            "retry_interval": stored_option(o.retry_interval),
            "retry_limit": stored_option(o.retry_limit),
            "retry_count": stored_option(o.retry_count),
            "concurrent": o.concurrent,
            # credentials (Authorization, *token*, ...) are sent to branches, never shown
            "branch_headers": redact_headers(o.branch_headers),
            "passthrough_headers": o.passthrough_headers,
        }
    )


def branch_json(b: Branch) -> dict[str, Any]:
    """A branch as DTM's JSON, with its payload as text and base64."""
    out = _omit_empty(
        {
            "create_time": iso(b.create_time),
            "update_time": iso(b.update_time),
            "gid": b.gid,
            "url": b.url,
            "branch_id": b.branch_id,
            "op": b.op.value,
            "status": b.status.value,
            "finish_time": iso(b.finish_time),
            "rollback_time": iso(b.rollback_time),
        }
    )
    # Go encodes []byte as base64; `data` is the same payload as text, for people.
    out["bin_data"] = base64.b64encode(b.data).decode()
    out["data"] = b.data.decode(errors="replace")
    return out


def kv_json(kv: KV) -> dict[str, Any]:
    """A key-value record as DTM's JSON."""
    return {
        "cat": kv.cat,
        "k": kv.k,
        "v": kv.v,
        "version": kv.version,
        "create_time": iso(kv.create_time),
        "update_time": iso(kv.update_time),
    }


def call_json(c: CallRecord) -> dict[str, Any]:
    """One call of the history: dtmx's own shape (DTM has none). `result` in DTM's words
    (SUCCESS, FAILURE, ONGOING, ERROR); `retries` = attempt - 1; `next_retry_time` only
    when the call made the transaction wait for a retry."""
    out: dict[str, Any] = {
        "branch_id": c.branch_id,
        "op": c.op.value,
        "attempt": c.attempt,
        "retries": max(0, c.attempt - 1),
        "start_time": iso(c.start),
        "duration_ms": round(c.duration * 1000, 3) if math.isfinite(c.duration) else 0,
        "result": c.outcome.value.upper(),
        "reason": c.reason,
        "server": c.server,
    }
    if c.next_retry is not None:
        out["next_retry_time"] = iso(c.next_retry)
    return out


def query_json(trans: Transaction | None, branches: list[Branch],
               calls: list[CallRecord] | None = None) -> dict[str, Any]:
    """What a query answers, over HTTP (GET query) and gRPC (dtmx's Query) alike: DTM's
    `transaction` and `branches`, and with `calls` dtmx's call history under its own key
    (`calls`, oldest first; DTM clients ignore keys they do not know)."""
    out: dict[str, Any] = {
        "transaction": trans_json(trans) if trans else None,
        "branches": [branch_json(b) for b in branches],
    }
    if calls is not None:
        out["calls"] = [call_json(c) for c in calls]
    return out
