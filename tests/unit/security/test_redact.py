"""Header masking and the answer cap, without a server."""

from __future__ import annotations

from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall, CallResult
from dtmx.security.redact import WITHHELD, AnswerCap, cap_text, is_sensitive, redact_headers


def test_sensitive_names() -> None:
    for name in ("Authorization", "proxy-authorization", "Cookie", "X-Auth-Token",
                 "client_secret", "DB-Password", "X-Api-Key", "Set-Cookie"):
        assert is_sensitive(name), name
    for name in ("X-Trace", "Content-Type", "traceparent", "X-Request-Id"):
        assert not is_sensitive(name), name
    assert redact_headers({"Authorization": "Bearer x", "X-Trace": "1"}) == {
        "Authorization": "***", "X-Trace": "1"}


def test_cap_text_counts_utf8_bytes() -> None:
    assert cap_text("short", 10) == "short"
    capped = cap_text("é" * 10, 5)  # 2 bytes each: never half a character
    assert capped.startswith("éé") and capped.endswith("(truncated)")


class _Fixed:
    """An invoker that always answers `result` (what AnswerCap wraps)."""

    def __init__(self, result: CallResult) -> None:
        self.result = result

    async def call(self, call: BranchCall) -> CallResult:
        return self.result

    async def close(self) -> None:
        return None


async def test_answer_cap_and_withhold() -> None:
    call = BranchCall.__new__(BranchCall)  # AnswerCap never reads it
    long = CallResult(Outcome.FAILURE, "409 " + "y" * 1000)
    out = await AnswerCap(_Fixed(long), max_bytes=50).call(call)
    assert out.outcome is Outcome.FAILURE and len(out.detail) < 80
    out = await AnswerCap(_Fixed(long), withhold=True).call(call)
    assert out.detail == WITHHELD
    err = CallResult(Outcome.ERROR, "500 internal secret stuff")
    assert (await AnswerCap(_Fixed(err), withhold=True).call(call)).detail == "500"
    timeout = CallResult(Outcome.ERROR, "timeout after 3s")
    assert (await AnswerCap(_Fixed(timeout), withhold=True).call(call)).detail == timeout.detail
