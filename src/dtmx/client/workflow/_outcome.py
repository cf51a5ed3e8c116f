"""A step's outcome and the small helpers steps share (pure)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dtmx.client._consts import Status
from dtmx.client._errors import Failure
from dtmx.client.barrier import BranchBarrier

#: A commit or rollback callback: gets the barrier of its branch and op.
Phase2 = Callable[[BranchBarrier], Awaitable[None] | None]
#: A local step: gets the barrier of its branch; returns the step's result.
LocalStep = Callable[[BranchBarrier], Awaitable[Any] | Any]

@dataclass(slots=True)
class Outcome:
    """What a step did: its status to record (None: nothing, it is retried), its data,
    and the error to raise (Failure, Ongoing, or any other)."""

    status: Status | None
    data: bytes = b""
    error: BaseException | None = None


def name_of(fn: Callable[..., Any]) -> str:
    """A callable's name for messages (its qualified name when it has one)."""
    return str(getattr(fn, "__qualname__", None) or type(fn).__name__)


def outcome_of_error(e: BaseException) -> Outcome:
    """A step's error as an outcome: Failure is recorded as failed, anything else is not."""
    if isinstance(e, Failure):
        return Outcome(Status.FAILED, e.message.encode(), e)
    return Outcome(None, b"", e)  # Ongoing or an error: not recorded, the step runs again


async def maybe_await(value: Any) -> Any:
    """`value`, awaited if it is awaitable."""
    return await value if inspect.isawaitable(value) else value


def path_of(url: str) -> str:
    """The part of a branch URL that names the step: the path (the host may move)."""
    if "://" in url:
        rest = url.split("://", 1)[1]
        path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        return path.split("?", 1)[0]
    return "/" + url.split("/", 1)[1] if "/" in url else url
