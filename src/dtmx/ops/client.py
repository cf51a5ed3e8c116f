"""A blocking client of a running server's HTTP API, for the operator commands.

Standard library only (urllib, json), so the commands work where only the SDK is installed.
Every failure is an `OpsError` carrying the exit code the command ends with.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from enum import IntEnum
from typing import Any

DTMSVR = "/api/dtmsvr"


class Exit(IntEnum):
    """Exit codes of the operator commands (documented in the README)."""

    OK = 0
    REFUSED = 1  # the server refused the operation (e.g. force-stop of a finished transaction)
    BAD_INPUT = 2  # bad arguments, or the server answered 400
    NOT_FOUND = 3  # no such transaction, topic or subscription
    AUTH = 4  # no token, or the token's role may not do this (401/403)
    UNAVAILABLE = 5  # server unreachable, timed out, or answered 5xx / something unexpected


class OpsError(Exception):
    """A command failed; `code` is the exit code, `message` says why."""

    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _exit_for(status: int) -> Exit:
    if status == 400:
        return Exit.BAD_INPUT
    if status == 404:
        return Exit.NOT_FOUND
    if status in (401, 403):
        return Exit.AUTH
    if status >= 500:
        return Exit.UNAVAILABLE
    return Exit.REFUSED


def base_url(server: str) -> str:
    """`http://host:port` from what a user may type (with or without /api/dtmsvr)."""
    s = server.strip().rstrip("/")
    if "://" not in s:
        s = f"http://{s}"
    if s.endswith(DTMSVR):
        s = s[: -len(DTMSVR)]
    return s


class OpsClient:
    """Calls the server at `server` (e.g. http://127.0.0.1:36789) with an optional token."""

    def __init__(self, server: str, token: str = "", timeout: float = 10.0) -> None:
        self.base = base_url(server)
        self._token = token
        self.timeout = timeout

    def call(
        self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        """One request; the decoded JSON answer, or OpsError."""
        q = {k: str(v) for k, v in (query or {}).items() if v not in (None, "")}
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(q)}" if q else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as res:
                raw = res.read()
        except urllib.error.HTTPError as e:
            why = _message(e.read()) or e.reason
            raise OpsError(_exit_for(e.code), f"{e.code}: {why}") from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise OpsError(Exit.UNAVAILABLE, f"cannot reach {self.base}: {reason}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise OpsError(Exit.UNAVAILABLE, f"{url} did not answer JSON") from None

    # ---- the verbs ------------------------------------------------------------------------
    def transactions(
        self, *, status: str = "", trans_type: str = "", gid_prefix: str = "",
        since_ms: int | None = None, limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Newest first, following pages until `limit` transactions."""
        out: list[dict[str, Any]] = []
        position = ""
        while len(out) < limit:
            page = self.call("GET", f"{DTMSVR}/all", {
                "status": status, "transType": trans_type, "gidPrefix": gid_prefix,
                "createTimeStart": since_ms, "limit": min(100, limit - len(out)),
                "position": position,
            })
            out.extend(page.get("transactions") or [])
            position = page.get("next_position") or ""
            if not position:
                break
        return out[:limit]

    def transaction(self, gid: str) -> dict[str, Any]:
        """{'transaction': ..., 'branches': [...]}; OpsError NOT_FOUND if there is none."""
        got = self.call("GET", f"{DTMSVR}/query", {"gid": gid})
        if not got or not got.get("transaction"):
            raise OpsError(Exit.NOT_FOUND, f"no transaction with gid {gid}")
        return dict(got)

    def force_stop(self, gid: str) -> Any:
        """Fail an unfinished transaction now (the server's forceStop); its answer as parsed."""
        return self.call("POST", f"{DTMSVR}/forceStop", body={"gid": gid})

    def retry_now(self, gid: str) -> Any:
        """Make one transaction due now (resetNextCronTime); its answer as parsed."""
        return self.call("POST", f"{DTMSVR}/resetNextCronTime", body={"gid": gid})

    def topics(self) -> list[dict[str, Any]]:
        """[{'topic', 'subscribers': [{'url', 'remark'}], ...}] for every topic."""
        out: list[dict[str, Any]] = []
        position = ""
        while True:
            page = self.call("GET", f"{DTMSVR}/scanKV",
                             {"cat": "topics", "position": position, "limit": 100})
            for kv in page.get("kv") or []:
                try:
                    subs = json.loads(kv.get("v") or "[]")
                except ValueError:
                    subs = []
                out.append({"topic": kv.get("k"), "subscribers": subs,
                            "version": kv.get("version"), "update_time": kv.get("update_time")})
            position = page.get("next_position") or ""
            if not position:
                return out

    def subscribe(self, topic: str, url: str, remark: str = "") -> Any:
        """Add `url` as a subscriber of `topic`; a repeat is an OpsError CONFLICT."""
        return self.call("GET", f"{DTMSVR}/subscribe",
                         {"topic": topic, "url": url, "remark": remark})

    def unsubscribe(self, topic: str, url: str) -> Any:
        """Remove `url` from `topic`; an unknown one is an OpsError NOT_FOUND."""
        return self.call("GET", f"{DTMSVR}/unsubscribe", {"topic": topic, "url": url})

    def delete_topic(self, topic: str) -> Any:
        """Delete `topic` and all its subscribers; an unknown one is an OpsError NOT_FOUND."""
        return self.call("DELETE", f"{DTMSVR}/topic/{urllib.parse.quote(topic, safe='')}")

    def servers(self) -> list[dict[str, Any]]:
        """The servers sharing the store, from their heartbeat records (the admin API)."""
        got = self.call("GET", "/api/admin/servers")
        return list(got.get("servers") or [])


def _message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:200]
    return str(data.get("message") or data) if isinstance(data, dict) else str(data)
