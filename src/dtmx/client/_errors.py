"""The SDK's exceptions and the one place where an answer becomes one of them.

Every exception is a `DtmError` and carries what the server said as attributes: `message`
(the server's own message, never a repr), `status` (the HTTP status, if the answer came
over HTTP), `grpc_code` (the gRPC status name, if over gRPC) and `body` (the raw text).

An HTTP answer maps as the wire contract says: 425 or a body containing ONGOING is
`Ongoing`; 409 or a body containing FAILURE is `Failure`; another 4xx is `Rejected` (the
server refused the request: bad input, unknown gid, missing token); any other status but
200 is a plain `DtmError`; 200 is success. Old servers and branches only put the word in
the body, new ones only set the status, so both are checked.

A submit with `wait_result` ends in one of `TransactionFailed` (a `Failure`: the
transaction ended failed) or `StillRunning` (an `Ongoing`: it has not finished yet, the
server goes on with it). No answer in time is `TimedOut` (also a `TimeoutError`).
"""

from __future__ import annotations

from typing import Any

import orjson

from dtmx.client._consts import HTTP_CONFLICT, HTTP_OK, HTTP_TOO_EARLY, DtmResult, Status

_MAX_MESSAGE = 2000
_HTTP_CLIENT_ERRORS = range(400, 500)
#: What a DTM server answers a `wait_result` submit whose transaction has not succeeded.
WAIT_PREFIX = "wait result not return success"


class DtmError(Exception):
    """The DTM server or a branch answered with an error."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        grpc_code: str | None = None,
        body: str | None = None,
    ) -> None:
        self.message = message or (type(self).__doc__ or "error").strip()
        #: HTTP status of the answer, when it came over HTTP.
        self.status = status
        #: gRPC status name (e.g. "INVALID_ARGUMENT"), when it came over gRPC.
        self.grpc_code = grpc_code
        #: The answer's raw body text, when there was one.
        self.body = body
        super().__init__(self.message)


class Failure(DtmError):
    """The transaction or branch failed for good (HTTP 409 / FAILURE): do not retry."""


class Ongoing(DtmError):
    """The transaction or branch is still in progress (HTTP 425 / ONGOING): ask again later."""


class Rejected(DtmError):
    """The server refused the request (HTTP 4xx; gRPC INVALID_ARGUMENT, NOT_FOUND...)."""


class TimedOut(DtmError, TimeoutError):
    """No answer within the client's timeout; the server may still have acted on the call."""


class TransactionFailed(Failure):
    """The transaction ended failed (submit with `wait_result`); `message` is its reason."""

    def __init__(self, message: str | None = None, *, gid: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        #: The failed transaction's gid.
        self.gid = gid


class StillRunning(Ongoing):
    """The transaction has not finished yet (submit with `wait_result`); the server goes on
    with it: query it later."""

    def __init__(
        self, message: str | None = None, *, gid: str = "", state: Status | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        #: The running transaction's gid.
        self.gid = gid
        #: Its status when the server answered, if the server said.
        self.state = state


class InvalidBranchInfo(DtmError, ValueError):
    """The request does not carry the DTM branch parameters gid, trans_type, branch_id, op."""


def message_of(text: str) -> str | None:
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
        return Ongoing(message_of(text), status=status, body=text)
    if status == HTTP_CONFLICT or (check_body and DtmResult.FAILURE in text):
        return Failure(message_of(text), status=status, body=text)
    if status in _HTTP_CLIENT_ERRORS:
        return Rejected(message_of(text) or f"HTTP {status}", status=status, body=text)
    if status != HTTP_OK:
        return DtmError(message_of(text) or f"HTTP {status}", status=status, body=text)
    return None


def raise_for_response(status: int, text: str, *, check_body: bool = True) -> None:
    """Raise the exception `error_for_response` names, if any."""
    err = error_for_response(status, text, check_body=check_body)
    if err is not None:
        raise err


def wait_outcome(err: DtmError, gid: str) -> DtmError:
    """What an error answering a `wait_result` submit means for the transaction.

    A DTM server says "wait result not return success: <status>" when the transaction has
    not succeeded in time: a final status is `TransactionFailed`, another `StillRunning`.
    Any other `Failure` carries the transaction's rollback reason (`TransactionFailed`).
    Everything else (rejected, unreachable, timed out) is returned as it is.
    """
    kw: dict[str, Any] = {"status": err.status, "grpc_code": err.grpc_code, "body": err.body}
    if err.message.startswith(WAIT_PREFIX):
        word = err.message.removeprefix(WAIT_PREFIX).strip(" :")
        state = Status(word) if word in {s.value for s in Status} else None
        if state is Status.FAILED:
            return TransactionFailed(err.message, gid=gid, **kw)
        return StillRunning(err.message, gid=gid, state=state, **kw)
    if isinstance(err, Failure) and not isinstance(err, TransactionFailed):
        return TransactionFailed(err.message, gid=gid, **kw)
    return err
