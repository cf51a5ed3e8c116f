"""dtmx SDK: talk to a DTM-compatible server from asyncio code.

Needs only aiohttp and orjson. What an application uses is exported here; the blocking API
is `dtmx.client.sync`; branch-side helpers for web frameworks are `dtmx.client.starlette`
and `dtmx.client.aiohttp_web`; the barrier is `dtmx.client.barrier`; gRPC (the `grpc`
extra) is `dtmx.client.grpc`. Modules whose names start with `_` are internal.
"""

from __future__ import annotations

from dtmx.client._branch import BranchInfo, result_for
from dtmx.client._client import DtmClient
from dtmx.client._consts import DtmResult, Op, Status, TransType
from dtmx.client._errors import (
    DtmError,
    Failure,
    InvalidBranchInfo,
    Ongoing,
    Rejected,
    StillRunning,
    TimedOut,
    TransactionFailed,
)
from dtmx.client._msg import Msg
from dtmx.client._saga import Saga
from dtmx.client._state import BranchState, TransactionState
from dtmx.client._tcc import Tcc, tcc_global_transaction
from dtmx.client._xa import Xa, xa_global_transaction
from dtmx.client._xa_local import XaBranchInfo, xa_local_transaction
from dtmx.client.barrier import BranchBarrier

__all__ = [
    "BranchBarrier",
    "BranchInfo",
    "BranchState",
    "DtmClient",
    "DtmError",
    "DtmResult",
    "Failure",
    "InvalidBranchInfo",
    "Msg",
    "Ongoing",
    "Op",
    "Rejected",
    "Saga",
    "Status",
    "StillRunning",
    "Tcc",
    "TimedOut",
    "TransType",
    "TransactionFailed",
    "TransactionState",
    "Xa",
    "XaBranchInfo",
    "result_for",
    "tcc_global_transaction",
    "xa_global_transaction",
    "xa_local_transaction",
]
