"""A validated client request (prepare / submit / abort), independent of HTTP or gRPC.

Both adapters build a `TransRequest`; the HTTP adapter via `parse_trans_body`. Validation
lives here, once, so both transports reject the same bad input with the same message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dtmx.core.models import Protocol, TransOptions, TransType
from dtmx.errors import BadRequest

MAX_GID = 128


@dataclass(slots=True)
class TransRequest:
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


def check_gid(gid: Any) -> str:
    if not isinstance(gid, str) or not gid:
        raise BadRequest("gid is required and must be a non-empty string")
    if len(gid) > MAX_GID:
        raise BadRequest(f"gid is longer than {MAX_GID} characters")
    if any(c in gid for c in "\x00\r\n\t "):
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
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0 or v != int(v):
        raise BadRequest(f"{key} must be a non-negative integer")
    return int(v)


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
    try:
        return TransType(v)
    except ValueError:
        allowed = "|".join(t.value for t in TransType)
        raise BadRequest(f"unknown trans_type {v!r}, expected one of {allowed}") from None


def parse_trans_body(body: Any) -> TransRequest:
    """Validate a prepare / submit / abort JSON body as DTM clients send it.

    Unset strings arrive as null and unknown extra fields are ignored, as DTM does.
    """
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    gid = check_gid(body.get("gid"))
    trans_type = parse_trans_type(body.get("trans_type"))
    raw_steps = body.get("steps") or []
    if not isinstance(raw_steps, list):
        raise BadRequest("steps must be a list")
    steps: list[dict[str, str]] = []
    legacy_payloads: list[bytes] = []
    for i, s in enumerate(raw_steps):
        if not isinstance(s, dict) or not all(
            isinstance(k, str) and (isinstance(x, str) or x is None) for k, x in s.items()
        ):
            raise BadRequest(f"steps[{i}] must be an object of strings")
        step = {k: x for k, x in s.items() if x is not None}
        if "data" in step:  # legacy clients put the payload inside the step
            legacy_payloads.append(step.pop("data").encode())
        steps.append(step)
    raw_payloads = body.get("payloads") or []
    if not isinstance(raw_payloads, list) or not all(isinstance(p, str) for p in raw_payloads):
        raise BadRequest("payloads must be a list of strings")
    payloads = [p.encode() for p in raw_payloads] + legacy_payloads
    protocol_s = _str(body, "protocol") or Protocol.HTTP.value
    try:
        protocol = Protocol(protocol_s)
    except ValueError:
        raise BadRequest(f"unknown protocol {protocol_s!r}") from None
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
