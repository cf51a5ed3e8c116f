"""Names the SDK shares with the DTM wire protocol.

These duplicate a few of the server's enums on purpose: the SDK must import without the
server package, so it carries its own copy of the strings that travel on the wire.
"""

from __future__ import annotations

from enum import StrEnum


class TransType(StrEnum):
    """Kind of global transaction, as sent in `trans_type`."""

    SAGA = "saga"
    TCC = "tcc"
    MSG = "msg"
    XA = "xa"
    WORKFLOW = "workflow"


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


class DtmResult(StrEnum):
    """The `dtm_result` value of a response body."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    ONGOING = "ONGOING"


#: Prefix of a msg step that fans out to a topic's subscribers.
MSG_TOPIC_PREFIX = "topic://"
#: Branch id and op under which a msg's local transaction is checked (query_prepared).
MSG_DO_BRANCH_ID = "00"
MSG_DO_OP = Op.MSG

HTTP_OK = 200
HTTP_CONFLICT = 409
HTTP_TOO_EARLY = 425
HTTP_INTERNAL = 500
