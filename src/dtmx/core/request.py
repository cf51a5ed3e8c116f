"""Validated client requests, independent of HTTP or gRPC: the one place input is checked.

Both adapters build the same values here (`parse_trans_body` / `check_trans` for prepare,
submit and abort, `parse_registration` for registerBranch, `query_int` / `query_position`
for query parameters), so both transports reject the same bad input with the same message,
and nothing out of range ever reaches the store. Every number has a documented range
(`RANGES`); a value outside it is a `BadRequest` naming the field and the range.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dtmx.core import msg, saga, workflow
from dtmx.core.limits import Limits
from dtmx.core.models import Op, Protocol, Status, TransOptions, TransType
from dtmx.errors import BadRequest

MAX_GID = 128
MAX_BRANCH_ID = 128
#: Seconds: timeouts, intervals, delays. int32, as DTM's schema stores them; now + this is
#: still a date every store and every client can represent.
MAX_SECONDS = 2**31 - 1
#: Counts (retry_limit).
MAX_COUNT = 2**31 - 1
#: Page size of `all` and `scanKV`, and batch of `resetCronTime`.
MAX_PAGE = 1000
#: Scan positions are row ids or creation sequences: integers exact in a double (Redis Lua).
MAX_POSITION = 2**53 - 1
#: createTimeStart/End, epoch milliseconds: up to the last millisecond of year 9999.
MAX_EPOCH_MS = 253_402_300_799_999

#: Inclusive range of every numeric option and query parameter, by its wire name.
RANGES: dict[str, tuple[int, int]] = {
    "timeout_to_fail": (0, MAX_SECONDS),
    "request_timeout": (0, MAX_SECONDS),
    "retry_interval": (0, MAX_SECONDS),
    "retry_limit": (0, MAX_COUNT),
    "custom_data.delay": (0, MAX_SECONDS),
    "limit": (1, MAX_PAGE),
    "position": (0, MAX_POSITION),
    "timeout": (0, MAX_SECONDS),
    "createTimeStart": (0, MAX_EPOCH_MS),
    "createTimeEnd": (0, MAX_EPOCH_MS),
}

# RFC 9110 token: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_GID = re.compile(r"[\x00\r\n\t ]")
# by wire value: a dict lookup, where calling the enum costs a few tenths of a microsecond
_TRANS_TYPES = {t.value: t for t in TransType}
_PROTOCOLS = {p.value: p for p in Protocol}


class Verb(StrEnum):
    """What a transaction request asks for."""

    PREPARE = "prepare"
    SUBMIT = "submit"
    ABORT = "abort"
    PREPARE_WORKFLOW = "prepareWorkflow"


@dataclass(slots=True)
class TransRequest:
    """A validated request for one transaction (submit/prepare/abort), transport-free."""

    gid: str
    trans_type: TransType
    steps: list[dict[str, str]] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    custom_data: str = ""
    query_prepared: str = ""
    protocol: Protocol = Protocol.HTTP
    options: TransOptions = field(default_factory=TransOptions)
    rollback_reason: str = ""
    req_extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Registration:
    """A validated registerBranch: `urls` holds the per-type entries (confirm, cancel, url);
    a workflow's records its step's `op` and `status` instead."""

    gid: str
    trans_type: TransType
    branch_id: str
    payload: bytes
    urls: dict[str, str]
    op: Op = Op.ACTION
    status: Status = Status.PREPARED


def in_range(name: str, v: Any, label: str = "") -> int:
    """`v` as an int if it is an integer inside RANGES[name]; BadRequest otherwise, naming
    the field as `label` (the transport's own name for it) or `name`."""
    lo, hi = RANGES[name]
    ok = (
        not isinstance(v, bool)
        and isinstance(v, int | float)
        and math.isfinite(v)
        and v == int(v)
        and lo <= v <= hi
    )
    if not ok:
        raise BadRequest(f"{label or name} must be an integer in {lo}..{hi}, not {shown(v)}")
    return int(v)


def stored_option(v: Any) -> int:
    """A stored numeric option read back, clamped into 0..MAX_SECONDS so it can always be
    served, whatever an older version or another tool wrote (reads never raise)."""
    try:
        f = float(v or 0)
    except (TypeError, ValueError):
        return 0
    if not math.isfinite(f) or f <= 0:
        return 0
    return int(min(f, MAX_SECONDS))


_NUMERIC_OPTIONS = ("timeout_to_fail", "request_timeout", "retry_interval", "retry_limit",
                    "retry_count")


def clamp_stored(o: TransOptions) -> TransOptions:
    """Stored options with every number clamped by `stored_option` (the row readers of every
    store call this, so no stored value can overflow a time computed from it)."""
    for name in _NUMERIC_OPTIONS:
        setattr(o, name, stored_option(getattr(o, name)))
    return o


def shown(v: Any) -> str:
    """`v` as an error message quotes it: its repr, cut to 40 characters."""
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def check_gid(gid: Any) -> str:
    """`gid` if it is a non-empty string within the length limit; BadRequest otherwise."""
    if not isinstance(gid, str) or not gid:
        raise BadRequest("gid is required and must be a non-empty string")
    if len(gid) > MAX_GID:
        raise BadRequest(f"gid is longer than {MAX_GID} characters")
    if _BAD_GID.search(gid):
        raise BadRequest("gid must not contain whitespace or control characters")
    return gid


def _str(body: Mapping[str, Any], key: str) -> str:
    v = body.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise BadRequest(f"{key} must be a string")
    return v


def _int(body: Mapping[str, Any], key: str) -> int:
    v = body.get(key)
    return 0 if v is None else in_range(key, v)


def _bool(body: Mapping[str, Any], key: str) -> bool:
    v = body.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise BadRequest(f"{key} must be a boolean")
    return v


def _str_map(body: Mapping[str, Any], key: str) -> dict[str, str]:
    v = body.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    ):
        raise BadRequest(f"{key} must be an object of strings")
    return dict(v)


def parse_trans_type(v: Any) -> TransType:
    """`v` as a TransType; BadRequest naming the allowed ones otherwise."""
    t = _TRANS_TYPES.get(v) if isinstance(v, str) else None
    if t is None:
        allowed = "|".join(x.value for x in TransType)
        raise BadRequest(f"unknown trans_type {v!r}, expected one of {allowed}")
    return t


def parse_steps(raw: Any, name: str = "steps") -> tuple[list[dict[str, str]], list[bytes]]:
    """Steps as DTM clients send them: objects of strings (null values dropped); a legacy
    `data` inside a step is its payload, returned second."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        raise BadRequest(f"{name} must be a list")
    steps: list[dict[str, str]] = []
    legacy: list[bytes] = []
    for i, s in enumerate(raw):
        if not isinstance(s, dict):
            raise BadRequest(f"{name}[{i}] must be an object of strings")
        # one pass per step (this runs for every step of every transaction)
        step: dict[str, str] = {}
        for k, x in s.items():
            if not isinstance(k, str):
                raise BadRequest(f"{name}[{i}] must be an object of strings")
            if isinstance(x, str):
                step[k] = x
            elif x is not None:
                raise BadRequest(f"{name}[{i}] must be an object of strings")
        if "data" in step:
            legacy.append(step.pop("data").encode())
        steps.append(step)
    return steps, legacy


def parse_trans_body(body: Any) -> TransRequest:
    """Parse a prepare / submit / abort JSON body as DTM clients send it (types and ranges;
    `check_trans` checks the rest). Unset strings arrive as null and unknown extra fields
    are ignored, as DTM does."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    gid = check_gid(body.get("gid"))
    trans_type = parse_trans_type(body.get("trans_type"))
    steps, legacy_payloads = parse_steps(body.get("steps") or [])
    raw_payloads = body.get("payloads") or []
    if not isinstance(raw_payloads, list) or not all(isinstance(p, str) for p in raw_payloads):
        raise BadRequest("payloads must be a list of strings")
    payloads = [p.encode() for p in raw_payloads] + legacy_payloads
    protocol_s = _str(body, "protocol") or Protocol.HTTP.value
    protocol = _PROTOCOLS.get(protocol_s)
    if protocol is None:
        raise BadRequest(f"unknown protocol {protocol_s!r}")
    passthrough = body.get("passthrough_headers") or []
    if not isinstance(passthrough, list) or not all(isinstance(h, str) for h in passthrough):
        raise BadRequest("passthrough_headers must be a list of strings")
    options = TransOptions(
        wait_result=_bool(body, "wait_result"),
        timeout_to_fail=_int(body, "timeout_to_fail"),
        request_timeout=_int(body, "request_timeout"),
        retry_interval=_int(body, "retry_interval"),
        retry_limit=_int(body, "retry_limit"),
        concurrent=_bool(body, "concurrent"),
        branch_headers=_str_map(body, "branch_headers"),
        passthrough_headers=list(passthrough),
    )
    return TransRequest(
        gid=gid,
        trans_type=trans_type,
        steps=steps,
        payloads=payloads,
        custom_data=_str(body, "custom_data"),
        query_prepared=_str(body, "query_prepared"),
        protocol=protocol,
        options=options,
        rollback_reason=_str(body, "rollback_reason"),
        req_extra=_str_map(body, "req_extra"),
    )


def options_from_numbers(
    *, wait_result: bool, timeout_to_fail: Any, request_timeout: Any, retry_interval: Any,
    retry_limit: Any, branch_headers: Mapping[str, str],
) -> TransOptions:
    """TransOptions from gRPC's int64 fields, range-checked (messages use gRPC's names)."""
    return TransOptions(
        wait_result=wait_result,
        timeout_to_fail=in_range("timeout_to_fail", timeout_to_fail, "TimeoutToFail"),
        request_timeout=in_range("request_timeout", request_timeout, "RequestTimeout"),
        retry_interval=in_range("retry_interval", retry_interval, "RetryInterval"),
        retry_limit=in_range("retry_limit", retry_limit, "RetryLimit"),
        branch_headers=dict(branch_headers),
    )


def check_trans(req: TransRequest, verb: Verb, limits: Limits) -> TransRequest:
    """Refuse what would be accepted and then never progress; returns `req` unchanged."""
    t = req.trans_type
    _check_headers(req.options)
    if verb is Verb.PREPARE_WORKFLOW or t is TransType.WORKFLOW:
        return _check_workflow(req, verb)
    if verb is Verb.ABORT:
        return req
    if verb is Verb.PREPARE and t is TransType.SAGA:
        raise BadRequest("a saga is submitted directly; prepare is for msg, tcc, xa")
    if verb is Verb.PREPARE and t is TransType.MSG and not req.query_prepared:
        raise BadRequest("a prepared msg needs query_prepared")
    if t in (TransType.SAGA, TransType.MSG):
        n = len(req.steps)
        if not n:
            raise BadRequest(f"a {t} needs at least one step")
        if n > limits.MaxBranches:
            raise BadRequest(
                f"{n} steps is more than Limits.MaxBranches ({limits.MaxBranches})"
            )
        if len(req.payloads) != n:
            raise BadRequest(
                f"payloads must have one entry per step: {n} steps, "
                f"{len(req.payloads)} payloads"
            )
    if t is TransType.SAGA:
        custom = saga.parse_custom(req.custom_data)
        saga.check_orders(custom, len(req.steps), limits.MaxOrderEdges)
    elif t is TransType.MSG:
        _check_msg_custom(req.custom_data)
    return req


def _check_workflow(req: TransRequest, verb: Verb) -> TransRequest:
    if req.trans_type is not TransType.WORKFLOW:
        raise BadRequest(f"prepareWorkflow is for trans_type workflow, not {req.trans_type}")
    if verb in (Verb.PREPARE, Verb.PREPARE_WORKFLOW):
        workflow.parse_custom(req.custom_data)
    elif verb is Verb.SUBMIT:
        workflow.parse_outcome(req.req_extra)
    else:
        raise BadRequest("a workflow cannot be aborted: its own code fails it (submit)")
    return req


def valid_header_name(name: str) -> bool:
    """True if `name` is an HTTP header name (RFC 9110 token)."""
    return bool(_TOKEN.fullmatch(name))


def _check_headers(o: TransOptions) -> None:
    for name, value in o.branch_headers.items():
        if not _TOKEN.fullmatch(name):
            raise BadRequest(f"branch_headers: {shown(name)} is not a valid header name")
        if _BAD_VALUE.search(value):
            raise BadRequest(f"branch_headers[{name}]: the value has a control character")
    for name in o.passthrough_headers:
        if not _TOKEN.fullmatch(name):
            raise BadRequest(f"passthrough_headers: {shown(name)} is not a valid header name")


def _check_msg_custom(custom_data: str) -> None:
    delay = msg.parse_delay(custom_data)  # a JSON object whose delay is a number >= 0
    lo, hi = RANGES["custom_data.delay"]
    if delay > hi:
        raise BadRequest(f"custom_data.delay must be in {lo}..{hi} seconds, not {delay:g}")


def check_fanout(
    steps: Sequence[Mapping[str, str]], subscribers: Mapping[str, Sequence[str]], limits: Limits,
    topic_prefix: str,
) -> None:
    """Refuse a msg whose `topic://` steps would create more than MaxTopicFanout branch rows
    (its other steps are bounded by MaxBranches)."""
    rows = sum(
        len(subscribers.get(step["action"][len(topic_prefix):], ()))
        for step in steps
        if step.get("action", "").startswith(topic_prefix)
    )
    if rows > limits.MaxTopicFanout:
        raise BadRequest(
            f"the topics fan out to {rows} branches, more than Limits.MaxTopicFanout "
            f"({limits.MaxTopicFanout})"
        )


def parse_registration(data: Mapping[str, Any]) -> Registration:
    """Validate a registerBranch map (strings; gRPC's payload may be bytes)."""
    for k, v in data.items():
        if not isinstance(v, str | bytes):
            raise BadRequest(f"registerBranch field {k!r} must be a string")
    gid = check_gid(data.get("gid"))
    trans_type = parse_trans_type(data.get("trans_type"))
    branch_id = data.get("branch_id")
    if not isinstance(branch_id, str) or not branch_id or len(branch_id) > MAX_BRANCH_ID:
        raise BadRequest(f"branch_id is required (at most {MAX_BRANCH_ID} characters)")
    if trans_type not in (TransType.TCC, TransType.XA, TransType.WORKFLOW):
        raise BadRequest(f"registerBranch for {trans_type} is not supported")
    raw = data.get("data", b"")
    payload = raw.encode() if isinstance(raw, str) else bytes(raw)
    if trans_type is TransType.WORKFLOW:
        op, status = workflow.parse_progress(str(data.get("op", "")),
                                             str(data.get("status", "")))
        return Registration(gid, trans_type, branch_id, payload, {}, op, status)
    urls = {k: v for k, v in data.items() if isinstance(v, str)}
    return Registration(gid, trans_type, branch_id, payload, urls)


def parse_topic(topic: str, url: str | None = None) -> None:
    """A topic name (and a subscriber URL, when given) must not be empty."""
    if not topic:
        raise BadRequest("empty topic")
    if url is not None and not url:
        raise BadRequest("empty url")
