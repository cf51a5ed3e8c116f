"""What the server echoes back: secrets in branch headers masked, branch answers capped.

`redact_headers` is what query, all and the admin UI show of `branch_headers`: values of
sensitive names (Authorization, Cookie, Proxy-Authorization, and any name containing token,
secret, password or key) become `***`; the stored values, sent to the branches, are unchanged.

`AnswerCap` wraps the branch invoker: the text of a branch's answer kept in a result (and so in
`rollback_reason`, in the `wait_result` error and in log lines) is cut to `max_bytes` of UTF-8,
or withheld entirely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall, CallResult, Invoker

MASK = "***"
_EXACT = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_PARTS = ("token", "secret", "password", "passwd", "key")


def is_sensitive(name: str) -> bool:
    """Whether a header of this name carries a credential (case-insensitive)."""
    n = name.lower()
    return n in _EXACT or any(p in n for p in _PARTS)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`headers` with the values of sensitive names replaced by `***`."""
    return {k: (MASK if is_sensitive(k) else v) for k, v in headers.items()}


WITHHELD = "(branch answer withheld)"


def cap_text(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` bytes of UTF-8 (never inside a character)."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode(errors="ignore") + "...(truncated)"


class AnswerCap:
    """An invoker that caps (or withholds) the answer text in the results of `inner`.

    Withholding keeps what the server itself says about an error (a timeout, a refused
    connection) but drops what a branch answered: a FAILURE or ONGOING result carries no
    text, and an HTTP error keeps only its status code.
    """

    def __init__(self, inner: Invoker, *, max_bytes: int = 256, withhold: bool = False) -> None:
        self.inner = inner
        self.max_bytes = max_bytes
        self.withhold = withhold

    async def call(self, call: BranchCall) -> CallResult:
        """Call the branch and cap (or withhold) the answer text kept as its detail."""
        res = await self.inner.call(call)
        if not res.detail:
            return res
        if self.withhold:
            if res.outcome is Outcome.ERROR:
                head = res.detail.split(" ", 1)[0]
                detail = head if head.isdigit() else cap_text(res.detail, self.max_bytes)
            else:
                detail = WITHHELD
            return replace(res, detail=detail)
        capped = cap_text(res.detail, self.max_bytes)
        return res if capped is res.detail else replace(res, detail=capped)

    async def close(self) -> None:
        """Close the wrapped invoker."""
        await self.inner.close()
