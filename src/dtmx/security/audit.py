"""The audit log: one structured line per operator action (who, what, when, outcome).

Lines go to the `dtmx.audit` logger at INFO (kept at INFO whatever LogLevel says, so the
trail cannot be turned off by accident), as one JSON object each:
`{"audit": "forceStop", "who": "ops", "role": "operator", "via": "http",
"target": {"gid": "g1"}, "outcome": "ok", "at": "2026-11-30T23:59:01.123Z"}`.
URLs in targets lose their user:password part and their query string.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import orjson

log = logging.getLogger("dtmx.audit")
log.setLevel(logging.INFO)


def safe_url(url: str) -> str:
    """`url` without credentials (user:password@) and without its query string."""
    try:
        u = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    host = u.hostname or ""
    if u.port is not None:
        host = f"{host}:{u.port}"
    if u.hostname and ":" in u.hostname:  # IPv6 literal
        host = f"[{u.hostname}]" + (f":{u.port}" if u.port is not None else "")
    return urlunsplit((u.scheme, host, u.path, "", ""))


def record(
    *,
    action: str,
    who: str,
    role: str,
    via: str,
    target: Mapping[str, str],
    outcome: str,
    at: float,
) -> None:
    """Write one audit line. `at` is epoch seconds (from the server's clock)."""
    when = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    line = {
        "audit": action, "who": who, "role": role, "via": via,
        "target": {k: (safe_url(v) if k == "url" else v) for k, v in target.items()},
        "outcome": outcome, "at": when.replace("+00:00", "Z"),
    }
    log.info("%s", orjson.dumps(line).decode())
