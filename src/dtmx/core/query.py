"""Query parameters of the HTTP API's reads (`all`, `scanKV`, `resetCronTime`): integers
within the ranges of core/request.RANGES, refused with a message otherwise."""

from __future__ import annotations

import re
from collections.abc import Mapping

from dtmx.core.request import RANGES, in_range, shown
from dtmx.errors import BadRequest


def query_int(query: Mapping[str, str], name: str, default: int) -> int:
    """An integer query parameter in RANGES[name]; `default` when absent or empty."""
    raw = query.get(name, "")
    if raw == "":
        return default
    lo, hi = RANGES[name]
    if not re.fullmatch(r"-?[0-9]{1,30}", raw):
        raise BadRequest(f"{name} must be an integer in {lo}..{hi}, not {shown(raw)}")
    return in_range(name, int(raw))


def query_position(query: Mapping[str, str]) -> str:
    """The `position` of a scan: '' (from the newest) or a decimal in RANGES["position"]."""
    raw = query.get("position", "")
    if raw:
        query_int(query, "position", 0)
    return raw
