"""The branch side: reading DTM's query parameters and answering in DTM's terms.

Framework adapters (`dtmx.client.starlette`, `dtmx.client.aiohttp_web`) build on these two.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dtmx.client._consts import (
    HTTP_CONFLICT,
    HTTP_INTERNAL,
    HTTP_OK,
    HTTP_TOO_EARLY,
    DtmResult,
    Op,
    TransType,
)
from dtmx.client._errors import Failure, InvalidBranchInfo, Ongoing

_FIELDS = ("gid", "trans_type", "branch_id", "op")


@dataclass(frozen=True, slots=True)
class BranchInfo:
    """Which branch of which transaction a request is for (DTM puts it in the query)."""

    gid: str
    trans_type: TransType
    branch_id: str
    op: Op

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> BranchInfo:
        """Parse gid, trans_type, branch_id and op; raise `InvalidBranchInfo` if any is bad."""
        missing = [f for f in _FIELDS if not query.get(f)]
        if missing:
            raise InvalidBranchInfo(
                f"not a DTM branch call: missing {', '.join(missing)} in the query"
            )
        try:
            trans_type = TransType(query["trans_type"])
        except ValueError:
            raise InvalidBranchInfo(f"unknown trans_type {query['trans_type']!r}") from None
        try:
            op = Op(query["op"])
        except ValueError:
            raise InvalidBranchInfo(f"unknown op {query['op']!r}") from None
        return cls(query["gid"], trans_type, query["branch_id"], op)


def result_for(exc: BaseException | None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body a branch answers for its outcome.

    `None` is success (200 SUCCESS); `Failure` is 409 FAILURE, so the server rolls back;
    `Ongoing` is 425 ONGOING, so it asks again later; anything else is a 500, which the
    server retries with backoff.
    """
    if exc is None:
        return HTTP_OK, {"dtm_result": DtmResult.SUCCESS.value}
    if isinstance(exc, Failure):
        return HTTP_CONFLICT, {"dtm_result": DtmResult.FAILURE.value, "message": exc.message}
    if isinstance(exc, Ongoing):
        return HTTP_TOO_EARLY, {"dtm_result": DtmResult.ONGOING.value, "message": exc.message}
    return HTTP_INTERNAL, {"message": str(exc) or type(exc).__name__}
