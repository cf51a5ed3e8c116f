"""What `DtmClient.query` answers: a transaction and its branches as typed values.

The server's JSON (`{"transaction": {...}, "branches": [...]}`, DTM's shape) stays
available as `raw` on each object, for fields the dataclasses do not name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from dtmx.client._consts import Op, Status, TransType

E = TypeVar("E", Op, Status, TransType)


def _enum_or_text(kind: type[E], value: Any) -> E | str:
    # A newer server may send a word this SDK does not know: keep it as text, do not fail.
    try:
        return kind(value)
    except ValueError:
        return str(value)


@dataclass(frozen=True, slots=True)
class BranchState:
    """One branch operation of a transaction as the server stored it."""

    branch_id: str
    op: Op | str
    status: Status | str
    url: str = ""
    #: The payload as text (binary payloads are in `raw["bin_data"]`, base64).
    data: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BranchState:
        """A branch from one entry of the query answer's `branches`."""
        return cls(
            branch_id=str(raw.get("branch_id", "")),
            op=_enum_or_text(Op, raw.get("op", "")),
            status=_enum_or_text(Status, raw.get("status", "")),
            url=str(raw.get("url", "")),
            data=str(raw.get("data", "")),
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class TransactionState:
    """A global transaction as the server stored it, with its branches in order."""

    gid: str
    trans_type: TransType | str
    status: Status | str
    branches: tuple[BranchState, ...] = ()
    #: Why it was rolled back ("" if it was not).
    rollback_reason: str = ""
    #: The result a workflow stored ("" for other types).
    result: str = ""
    #: The server's JSON answer as it came: `{"transaction": {...}, "branches": [...]}`.
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        """True once the transaction succeeded or failed for good."""
        return self.status in (Status.SUCCEED, Status.FAILED)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TransactionState | None:
        """The state in a query answer, or None when the server has no such transaction."""
        trans = raw.get("transaction")
        if not isinstance(trans, dict):
            return None
        return cls(
            gid=str(trans.get("gid", "")),
            trans_type=_enum_or_text(TransType, trans.get("trans_type", "")),
            status=_enum_or_text(Status, trans.get("status", "")),
            branches=tuple(BranchState.from_json(b) for b in raw.get("branches") or ()),
            rollback_reason=str(trans.get("rollback_reason", "")),
            result=str(trans.get("result", "")),
            raw=raw,
        )
