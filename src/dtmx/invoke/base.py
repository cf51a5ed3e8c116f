"""What the engine needs from a branch caller, independent of transport."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from dtmx.core.models import Op, Outcome, TransType


@dataclass(slots=True, frozen=True)
class BranchCall:
    """One call of a branch URL (or of query_prepared, with branch_id 00 and op msg)."""

    url: str
    gid: str
    trans_type: TransType
    branch_id: str
    #: an Op, or a workflow's name when its callback is called (DTM sends it as the op)
    op: Op | str
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 3.0
    # xa branches are always POSTed; others use GET when the payload is empty (DTM's rule)
    force_post: bool = False
    #: the transaction's protocol is json-rpc: a URL with a `method` is called with JSON-RPC
    json_rpc: bool = False
    #: the call that may follow this one at once (see Followup); invokers that cannot send
    #: it that way ignore it
    then: Followup | None = None
    #: this call went out already (a Followup's `sent`): the invoker only awaits its result
    sent: Awaitable[CallResult] | None = None


class Followup:
    """The call a sequential run makes next if the call carrying this object succeeds.

    An invoker may send it from the transport's callback the moment that answer is read
    and found SUCCESS, without waiting for the run to look at it: in a long saga that
    wait (the run's task woken, the answer handed up, the next step planned and handed
    down) was as long as the branch call itself. The run sets `call` once it has planned
    it; the invoker asks `ready()` just before sending (cheap, and true only if the run
    would make this call next after that success) and puts the awaitable of the call's
    result in `sent`. The run then hands the call on with `sent`, so every wrapping
    invoker sees its result as usual; a wrapper that changes the request itself (tracing
    adds a traceparent) drops `then`, and its calls go the ordinary way.
    """

    __slots__ = ("call", "ready", "sent")

    def __init__(self, ready: Callable[[], bool]) -> None:
        self.ready = ready
        self.call: BranchCall | None = None
        self.sent: Awaitable[CallResult] | None = None


@dataclass(slots=True, frozen=True)
class CallResult:
    """A branch call's outcome, with the detail that explains a non-success (bounded text)."""

    outcome: Outcome
    detail: str = ""


class Invoker(Protocol):
    """Calls a branch over one transport. Never raises: every problem is an ERROR result."""

    async def call(self, call: BranchCall) -> CallResult:
        """Call one branch; never raises for a branch's fault (it is an outcome)."""

    async def close(self) -> None:
        """Release connections."""
