"""One error base for the whole server, mapped once to HTTP status, gRPC code and body.

Each class's docstring is its default message. Store drivers' errors are translated into
these at the store adapter, so nothing above the store sees a driver exception.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from dtmx.wire import DtmResult


class DtmxError(Exception):
    """Internal error."""

    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[str] = "INTERNAL"
    dtm_result: ClassVar[DtmResult | None] = None
    #: a fault of the server itself (its store answering an error): logged with its
    #: traceback; everything else is one log line (client errors, an unreachable store)
    server_fault: ClassVar[bool] = False

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.message = message or (self.__class__.__doc__ or "error").strip()
        self.context = context
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        """The JSON body of the error: message, and dtm_result where DTM clients expect one."""
        out: dict[str, Any] = {"message": self.message}
        if self.dtm_result is not None:
            out["dtm_result"] = self.dtm_result.value
        return out


class BadRequest(DtmxError):
    """Bad request."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(DtmxError):
    """Not found."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class Failure(DtmxError):
    """The transaction cannot do that in its current status."""

    http_status = 409
    grpc_code = "ABORTED"
    dtm_result = DtmResult.FAILURE


class Ongoing(DtmxError):
    """The transaction is still in progress."""

    http_status = 425
    grpc_code = "FAILED_PRECONDITION"
    dtm_result = DtmResult.ONGOING


class StoreError(DtmxError):
    """The store failed."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    server_fault = True


class StoreUnavailable(StoreError):
    """The store cannot be reached."""

    server_fault = False  # an outage: one line per refused request, not a traceback each


def log_error(logger: logging.Logger, e: DtmxError, fmt: str, *args: Any) -> None:
    """Log an error answered to a client: `fmt % args` on one line, at INFO for a client
    error and WARNING for a 5xx; a server fault at ERROR with its traceback."""
    if e.server_fault:
        logger.error(fmt, *args, exc_info=e)
    else:
        logger.log(logging.WARNING if e.http_status >= 500 else logging.INFO, fmt, *args)


class DuplicateBranch(Failure):
    """A branch with that id and op is already registered."""


class DuplicateProgress(DtmxError):
    """That workflow step is already recorded; the first record is kept."""

    # Not a Failure: DTM's Go workflow client maps ABORTED (and a FAILURE body) to a failed
    # step and would roll the whole workflow back, while a duplicate only means another run
    # of the same workflow recorded the step first. DTM answers a plain error (HTTP 500,
    # gRPC UNKNOWN), which its client treats as "retry later"; so do 409 without a
    # dtm_result and ALREADY_EXISTS, without claiming a server fault.
    http_status = 409
    grpc_code = "ALREADY_EXISTS"


class DeadlineExpired(DtmxError):
    """The call's deadline passed before anything was stored."""

    http_status = 408
    grpc_code = "DEADLINE_EXCEEDED"


class ConfigError(DtmxError):
    """Invalid configuration."""


class Unauthorized(DtmxError):
    """A valid API token is required: send `Authorization: Bearer <token>`."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class Forbidden(DtmxError):
    """This API token's role may not do that."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"
