"""What TCC and XA share: a global transaction the client opens and closes itself.

The client prepares the transaction, calls its branches, then submits it (the server runs
every registered branch's second phase forward) or aborts it (the server reverses them).
Used as an async context manager, a normal exit submits and an exception aborts.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self, TypeVar

from dtmx.client._base import TransBase
from dtmx.client._errors import DtmError

T = TypeVar("T")
G = TypeVar("G", bound="GlobalTrans")
#: Characters of an abort reason sent to the server.
MAX_REASON = 1024


class GlobalTrans(TransBase):
    """A transaction the client prepares, then submits or aborts (TCC and XA).

    Subclasses say in their own docstring what the server does with each branch on submit
    and on abort.
    """

    async def prepare(self) -> None:
        """Create the global transaction as prepared."""
        await self.client.transport.prepare(self.to_body())

    async def submit(self) -> None:
        """Submit: the server runs every registered branch's second phase forward."""
        await self._submit()

    async def abort(self, reason: str = "") -> None:
        """Abort: the server reverses every registered branch; `reason` (cut to
        `MAX_REASON` characters) is kept as the rollback reason."""
        if reason:
            self.rollback_reason = reason[:MAX_REASON]
        await self.client.transport.abort(self.to_body())

    async def __aenter__(self) -> Self:
        await self.prepare()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.submit()
            return
        try:
            await self.abort(f"{type(exc).__name__}: {exc}")
        except DtmError as abort_err:
            # The original error matters more; the server's timeout aborts it anyway.
            exc.add_note(f"dtmx: abort of {self.gid} failed too: {abort_err}")


async def run_global(trans: G, fn: Callable[[G], Awaitable[T] | T]) -> T:
    """Run `fn(trans)` inside `trans`: prepare, then submit, or abort and re-raise on error."""
    async with trans:
        result = fn(trans)
        if inspect.isawaitable(result):
            result = await result
        return result
