"""Names the SDK shares with the DTM wire protocol.

The enums themselves are defined once, in `dtmx.wire` (the server imports the same ones);
this module adds the few constants only the SDK needs.
"""

from __future__ import annotations

from dtmx.wire import DtmResult as DtmResult
from dtmx.wire import Op as Op
from dtmx.wire import Status as Status
from dtmx.wire import TransType as TransType

#: Prefix of a msg step that fans out to a topic's subscribers.
MSG_TOPIC_PREFIX = "topic://"
#: Branch id and op under which a msg's local transaction is checked (query_prepared).
MSG_DO_BRANCH_ID = "00"
MSG_DO_OP = Op.MSG

HTTP_OK = 200
HTTP_CONFLICT = 409
HTTP_TOO_EARLY = 425
HTTP_INTERNAL = 500
