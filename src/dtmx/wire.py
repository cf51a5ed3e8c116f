"""The words of DTM's wire protocol, defined once for the server and the SDK.

Transaction types, statuses, branch ops and `dtm_result` values travel as these exact
strings (JSON bodies, query parameters, gRPC metadata, store rows). Both `dtmx.core` and
`dtmx.client` import them from here; this module imports nothing, so the SDK stays free of
the server's dependencies.
"""

from __future__ import annotations

from enum import StrEnum

#: DTM's barrier table (database.table) in a business database: the default everywhere.
BARRIER_TABLE = "dtm_barrier.barrier"


class TransType(StrEnum):
    """Kind of global transaction, as sent in `trans_type`."""

    SAGA = "saga"
    TCC = "tcc"
    MSG = "msg"
    XA = "xa"
    WORKFLOW = "workflow"


class Status(StrEnum):
    """Status of a global transaction; branches use PREPARED, SUCCEED and FAILED."""

    PREPARED = "prepared"
    SUBMITTED = "submitted"
    ABORTING = "aborting"
    SUCCEED = "succeed"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        """True for the two final statuses, succeed and failed."""
        return self in (Status.SUCCEED, Status.FAILED)


class Op(StrEnum):
    """Branch operation, as sent in the `op` query parameter of a branch call."""

    ACTION = "action"
    COMPENSATE = "compensate"
    TRY = "try"
    CONFIRM = "confirm"
    CANCEL = "cancel"
    MSG = "msg"
    COMMIT = "commit"
    ROLLBACK = "rollback"


class Protocol(StrEnum):
    """How the server calls a transaction's branches."""

    HTTP = "http"
    GRPC = "grpc"
    JSON_RPC = "json-rpc"


class DtmResult(StrEnum):
    """The `dtm_result` value of a response body."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    ONGOING = "ONGOING"
