"""Calling local branches: `local://name` URLs answered by functions in this process.

The invoker knows nothing of what a function means: each registered entry already maps a
`BranchCall` to a `CallResult` (dtmx.embedded adapts the application's functions, its
`Failure` and `Ongoing`, to that). What it adds is the transport's part: the name lookup,
the request timeout, and the rule that an invoker never raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from dtmx.core.local import is_local, local_name
from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall, CallResult

log = logging.getLogger(__name__)

LocalFn = Callable[[BranchCall], Awaitable[CallResult]]
"""One local branch: the call (gid, op, payload, ...) in, its result out."""


class LocalInvoker:
    """An `Invoker` for `local://name` URLs over a name -> function mapping (read at each
    call, so functions registered after start are found)."""

    def __init__(self, functions: Mapping[str, LocalFn]) -> None:
        self.functions = functions

    async def call(self, call: BranchCall) -> CallResult:
        """Run the function the URL names; a missing name or an escaping exception is an
        ERROR result (retried with backoff), never a raise."""
        fn = self.functions.get(local_name(call.url)) if is_local(call.url) else None
        if fn is None:
            return CallResult(Outcome.ERROR, f"no local function for {call.url}")
        try:
            # asyncio.timeout, not wait_for: no task per call (the function runs inline)
            async with asyncio.timeout(call.timeout if call.timeout > 0 else None):
                return await fn(call)
        except TimeoutError:
            return CallResult(Outcome.ERROR, f"timeout after {call.timeout:g}s")
        except Exception as e:  # the adapter maps the application's errors; this is the rest
            log.warning("local branch %s %s/%s raised %r", call.url, call.gid, call.branch_id, e)
            return CallResult(Outcome.ERROR, f"{type(e).__name__}: {e}")

    async def close(self) -> None:
        """Nothing to release."""
