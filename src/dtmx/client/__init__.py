"""dtmx SDK: talk to a DTM-compatible server from asyncio code.

Needs only aiohttp and orjson. The blocking API is `dtmx.client.sync`; branch-side helpers
for web frameworks are `dtmx.client.starlette` and `dtmx.client.aiohttp_web`; the barrier is
`dtmx.client.barrier`.
"""

from __future__ import annotations

from dtmx.client.barrier import BranchBarrier
from dtmx.client.base import BranchIdGen, payload_text
from dtmx.client.branch import BranchInfo, result_for
from dtmx.client.client import DtmClient
from dtmx.client.consts import DtmResult, Op, TransType
from dtmx.client.errors import DtmError, Failure, InvalidBranchInfo, Ongoing
from dtmx.client.http_transport import BranchResponse, HttpTransport
from dtmx.client.msg import Msg
from dtmx.client.saga import Saga
from dtmx.client.tcc import Tcc, tcc_global_transaction
from dtmx.client.transport import Transport

__all__ = [
    "BranchBarrier",
    "BranchIdGen",
    "BranchInfo",
    "BranchResponse",
    "DtmClient",
    "DtmError",
    "DtmResult",
    "Failure",
    "HttpTransport",
    "InvalidBranchInfo",
    "Msg",
    "Ongoing",
    "Op",
    "Saga",
    "Tcc",
    "TransType",
    "Transport",
    "payload_text",
    "result_for",
    "tcc_global_transaction",
]
