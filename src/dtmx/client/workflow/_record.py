"""What a workflow records on the server and reads back on replay (pure: no I/O).

A step's recorded data is the step's result (or, for a failed step, its error message)
behind a one-line header naming the step, e.g. ``dtmx1 http POST /TransOut``. DTM's server
keeps the data as opaque bytes, so the header costs no extra call, and on replay it tells
whether the code reached the same step as the one recorded under that branch id and op:
if not, the workflow has diverged and replaying it would hand one step's result to another.
Data without the header (recorded by another client) is replayed without that check.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from dtmx.client._base import payload_text
from dtmx.client._consts import Status
from dtmx.client._errors import DtmError

_TEXT = b"dtmx1 "
_B64 = b"dtmx1b "
# Keys of a progress / transaction as dtmx (snake_case), protojson (camelCase) or Go's
# encoding/json (the proto field names) write them.
_KEYS = {
    "branch_id": ("branch_id", "branchID", "BranchID", "branchId"),
    "bin_data": ("bin_data", "binData", "BinData"),
    "rollback_reason": ("rollback_reason", "rollbackReason", "RollbackReason"),
}


class WorkflowDiverged(DtmError):
    """On replay the workflow's code took another path than the one recorded.

    Raised before the step runs, naming the step (`branch_id`, `op`) and both what was
    recorded and what the code reached. The workflow is left as it is (not rolled back):
    fix the code, and the server's next resume replays it again.
    """

    def __init__(self, message: str, *, branch_id: str = "", op: str = "") -> None:
        super().__init__(message)
        #: The branch id of the step where the paths part.
        self.branch_id = branch_id
        #: Its op (action, commit, rollback).
        self.op = op


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded step: its status, the step it was (None: unknown) and its data."""

    status: Status
    step: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Progress:
    """What prepareWorkflow answered: the workflow's status and its recorded steps."""

    status: Status | None
    result: bytes
    rollback_reason: str
    steps: Mapping[tuple[str, str], Recorded]


def to_bytes(value: Any) -> bytes:
    """A step's or workflow's result as bytes: bytes as they are, str as UTF-8, a protobuf
    message serialized, None empty, anything else as JSON."""
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    serialize = getattr(value, "SerializeToString", None)
    if callable(serialize):
        return bytes(serialize())
    return payload_text(value).encode()


def encode(step: str, data: bytes) -> str:
    """The recorded text of `step` with result `data` (registerBranch's `data` is a string:
    data that is not UTF-8 travels as base64)."""
    name = " ".join(step.split())  # the header is one line
    try:
        return (_TEXT + name.encode() + b"\n").decode() + data.decode()
    except UnicodeDecodeError:
        return (_B64 + name.encode() + b"\n" + base64.b64encode(data)).decode()


def decode(raw: bytes) -> tuple[str | None, bytes]:
    """(step, data) of recorded bytes; step None when they carry no dtmx header."""
    for prefix, b64 in ((_B64, True), (_TEXT, False)):
        if raw.startswith(prefix):
            head, _, body = raw[len(prefix) :].partition(b"\n")
            if b64:
                try:
                    body = base64.b64decode(body, validate=True)
                except binascii.Error:
                    return None, raw
            return head.decode(errors="replace"), body
    return None, raw


def _get(obj: Mapping[str, Any], key: str) -> Any:
    for k in _KEYS.get(key, (key, key.capitalize())):
        if k in obj:
            return obj[k]
    return None


def _b64(value: Any) -> bytes:
    if not value:
        return b""
    try:
        return base64.b64decode(str(value), validate=True)
    except binascii.Error:
        raise DtmError("prepareWorkflow answered data that is not base64") from None


def _status(value: Any) -> Status | None:
    try:
        return Status(str(value)) if value else None
    except ValueError:
        raise DtmError(f"prepareWorkflow answered an unknown status {value!r}") from None


def parse_progress(reply: Mapping[str, Any]) -> Progress:
    """Read prepareWorkflow's answer (see `Transport.prepare_workflow`)."""
    tx = reply.get("transaction") or reply.get("Transaction") or {}
    raw_steps = reply.get("progresses") or reply.get("Progresses") or []
    if not isinstance(tx, Mapping) or not isinstance(raw_steps, Sequence):
        raise DtmError("prepareWorkflow answered an unexpected shape")
    steps: dict[tuple[str, str], Recorded] = {}
    for p in raw_steps:
        status = _status(_get(p, "status"))
        if status is None:
            continue  # a branch registered without an outcome: nothing to replay
        step, data = decode(_b64(_get(p, "bin_data")))
        key = (str(_get(p, "branch_id") or ""), str(_get(p, "op") or ""))
        steps.setdefault(key, Recorded(status, step, data))  # the first record wins
    return Progress(
        status=_status(_get(tx, "status")),
        result=_b64(_get(tx, "result")),
        rollback_reason=str(_get(tx, "rollback_reason") or ""),
        steps=steps,
    )


def custom_data(name: str, data: bytes) -> str:
    """`custom_data` of a workflow: its name and input, as DTM's Go client writes it."""
    return orjson.dumps({"name": name, "data": base64.b64encode(data).decode()}).decode()


def submit_extra(status: Status, result: bytes, reason: str) -> dict[str, str]:
    """`req_extra` of the final submit."""
    return {
        "status": status.value,
        "rollback_reason": reason,
        "result": base64.b64encode(result).decode(),
    }
