"""Plain-text output and duration input of the operator commands (pure functions)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in `7d`, `36h`, `1h30m`, `90s` or a bare number of seconds; ValueError else."""
    s = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        return float(s)
    parts = _DURATION.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 15m, 36h, 7d, 2w, 1h30m")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_since(text: str, now: float) -> float:
    """Epoch seconds from a duration before `now` (`2h`) or an ISO-8601 time (UTC if naive)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid --since {text!r}: a duration (2h, 7d) or an ISO time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def short_time(iso: str | None) -> str:
    """`2026-11-30T23:45:22.064+00:00` -> `2026-11-30 23:45:22Z`."""
    if not iso:
        return ""
    s = re.sub(r"\.\d+", "", iso.replace("T", " "))
    return s.replace("+00:00", "Z")


def ago(seconds: float) -> str:
    """A rough age: `12s`, `5m`, `3h`, `2d`."""
    s = abs(seconds)
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.0f}h"
    return f"{s / 86400:.0f}d"


def clip(value: Any, width: int) -> str:
    """`value` as one line of at most `width` characters."""
    s = " ".join(str("" if value is None else value).split())
    return s if len(s) <= width else s[: max(0, width - 1)] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned with two spaces between them; an empty table says so."""
    if not rows:
        return "(none)"
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)
