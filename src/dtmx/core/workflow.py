"""Workflow mode (DTM's `workflow`): the client runs the code, the server keeps its record.

A workflow is prepared by `prepareWorkflow`, each finished step is recorded with
`registerBranch` (op and status), and the client's `submit` carries the final status in
`req_extra`. The server calls nothing while the client is alive; when a prepared workflow
comes due (its client died, or answered "ongoing"), the planner says `Resume`: call the
workflow's callback (`query_prepared`) with its name as the op and its input as the body,
so the client replays it from the recorded steps. Like DTM, a prepared workflow is never
failed by `timeout_to_fail`: only its own code decides that it failed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from dtmx.core.models import Branch, Op, Status, Transaction
from dtmx.core.plan import Plan, Resume, Wait
from dtmx.core.timing import Timing
from dtmx.errors import BadRequest

#: The branch id of the workflow's callback call (DTM's, as for msg's query_prepared).
CALLBACK_BRANCH = "00"
#: Statuses a recorded step (and a submitted workflow) may have.
FINAL = (Status.SUCCEED, Status.FAILED)
#: Bytes of custom_data (the input is in it, base64), result and rollback_reason: MySQL's
#: TEXT columns hold no more, and a refused write after the fact would be a server error.
MAX_TEXT = 65535


@dataclass(slots=True, frozen=True)
class Custom:
    """A workflow's custom_data: its registered name and its input."""

    name: str
    data: bytes


@dataclass(slots=True, frozen=True)
class Outcome:
    """What a workflow's `submit` says (its `req_extra`): the final status, the result
    (base64, kept as sent) and the rollback reason."""

    status: Status
    result: str
    reason: str


def _b64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field} must be base64") from None


def _fits(value: str, field: str) -> None:
    if len(value.encode()) > MAX_TEXT:
        raise BadRequest(f"{field} is longer than {MAX_TEXT} bytes")


def parse_custom(custom_data: str) -> Custom:
    """custom_data as DTM's workflow client sends it: `{"name": N, "data": <base64>|null}`."""
    _fits(custom_data, "custom_data (the workflow's name and input, base64)")
    try:
        raw = orjson.loads(custom_data or "null")
    except orjson.JSONDecodeError:
        raise BadRequest("a workflow's custom_data must be JSON text") from None
    if not isinstance(raw, dict):
        raise BadRequest('a workflow\'s custom_data must be {"name": ..., "data": ...}')
    name, data = raw.get("name"), raw.get("data")
    if not isinstance(name, str) or not name:
        raise BadRequest("custom_data.name (the workflow's name) is required")
    if any(c in name for c in "\x00\r\n\t "):
        raise BadRequest("custom_data.name must not contain whitespace or control characters")
    if data is not None and not isinstance(data, str):
        raise BadRequest("custom_data.data must be base64 text or null")
    return Custom(name, _b64(data or "", "custom_data.data"))


def parse_outcome(req_extra: Mapping[str, str]) -> Outcome:
    """The final status of a workflow's submit; BadRequest unless succeed or failed."""
    raw = req_extra.get("status", "")
    if raw not in (s.value for s in FINAL):
        raise BadRequest(
            f"req_extra.status of a workflow submit must be succeed or failed, not {raw!r}")
    result, reason = req_extra.get("result", ""), req_extra.get("rollback_reason", "")
    _fits(result, "req_extra.result")
    _fits(reason, "req_extra.rollback_reason")
    _b64(result, "req_extra.result")
    return Outcome(Status(raw), result, reason)


def parse_progress(op: str, status: str) -> tuple[Op, Status]:
    """A recorded step's op (action, commit, rollback, ...) and status (succeed|failed)."""
    try:
        the_op = Op(op)
    except ValueError:
        allowed = "|".join(o.value for o in Op)
        raise BadRequest(f"workflow registerBranch: unknown op {op!r}, expected {allowed}") \
            from None
    if status not in (s.value for s in FINAL):
        raise BadRequest(
            f"workflow registerBranch: status must be succeed or failed, not {status!r}")
    return the_op, Status(status)


def progress(gid: str, branch_id: str, op: Op, status: Status, data: bytes,
             now: float) -> Branch:
    """The branch row recording one finished step (no URL: the server never calls it)."""
    return Branch(gid=gid, branch_id=branch_id, op=op, url="", data=data, status=status,
                  create_time=now, update_time=now, finish_time=now)


def plan(trans: Transaction, branches: Sequence[Branch], now: float, timing: Timing) -> Plan:
    """Resume a prepared workflow through its callback; anything else waits (a workflow
    goes from prepared straight to succeed or failed, by its client's submit)."""
    if trans.status is not Status.PREPARED or not trans.query_prepared:
        return Wait()
    custom = parse_custom(trans.custom_data)
    return Resume(op=custom.name, data=custom.data)
