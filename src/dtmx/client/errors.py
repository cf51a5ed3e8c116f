"""The SDK's exceptions and the one place where a response becomes one of them.

A response maps exactly as the wire contract says: 425 or a body containing ONGOING is
`Ongoing`; 409 or a body containing FAILURE is `Failure`; any other status but 200 is a plain
`DtmError`; 200 is success. Old servers and branches only put the word in the body, new ones
only set the status, so both are checked.
"""

from __future__ import annotations

from typing import Any

import orjson

from dtmx.client.consts import HTTP_CONFLICT, HTTP_OK, HTTP_TOO_EARLY, DtmResult

_MAX_MESSAGE = 2000


class DtmError(Exception):
    """The DTM server or a branch answered with an error."""

    def __init__(
        self, message: str | None = None, *, status: int | None = None, body: str | None = None
    ) -> None:
        self.message = message or (type(self).__doc__ or "error").strip()
        self.status = status
        self.body = body
        super().__init__(self.message)


class Failure(DtmError):
    """The transaction or branch failed for good (HTTP 409 / FAILURE): do not retry."""


class Ongoing(DtmError):
    """The transaction or branch is still in progress (HTTP 425 / ONGOING): ask again later."""


class InvalidBranchInfo(DtmError, ValueError):
    """The request does not carry the DTM branch parameters gid, trans_type, branch_id, op."""


def _message_of(text: str) -> str | None:
    """The server's own message if the body is DTM-style JSON, else the (clipped) text."""
    try:
        data: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "error"):
            if isinstance(data.get(key), str) and data[key]:
                return str(data[key])
    text = text.strip()
    return text[:_MAX_MESSAGE] or None


def error_for_response(status: int, text: str, *, check_body: bool = True) -> DtmError | None:
    """The exception a response with this status and body stands for, or None on success.

    `check_body=False` looks at the status only: for answers that carry data (query,
    newGid), where the words may appear inside, e.g., a rollback reason.
    """
    if status == HTTP_TOO_EARLY or (check_body and DtmResult.ONGOING in text):
        return Ongoing(_message_of(text), status=status, body=text)
    if status == HTTP_CONFLICT or (check_body and DtmResult.FAILURE in text):
        return Failure(_message_of(text), status=status, body=text)
    if status != HTTP_OK:
        msg = _message_of(text) or f"HTTP {status}"
        return DtmError(msg, status=status, body=text)
    return None


def raise_for_response(status: int, text: str, *, check_body: bool = True) -> None:
    """Raise the exception `error_for_response` names, if any."""
    err = error_for_response(status, text, check_body=check_body)
    if err is not None:
        raise err
