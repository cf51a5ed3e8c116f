"""What the engine needs from a branch caller, independent of transport."""

from __future__ import annotations

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
