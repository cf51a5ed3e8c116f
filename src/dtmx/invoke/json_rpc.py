"""Calling a branch with JSON-RPC 2.0, as DTM does for a `protocol: json-rpc` transaction.

DTM calls such a branch this way when its URL names a `method` in its query
(``http://host/api/json-rpc?method=TransIn``): it POSTs to that URL a JSON-RPC request whose
`params` are the branch's JSON payload (an object) plus `gid`, `trans_type`, `branch_id` and
`op`. The answer goes through DTM's HTTP result rule first, then its JSON-RPC error: code
-32901 is FAILURE, -32902 is ONGOING, any other error is an error (retried).

DTM itself compares those codes as a JSON number (float) against an int constant, so they
never match and FAILURE / ONGOING are retried as plain errors; here they mean what DTM's
documentation says they mean (README, Differences).
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import orjson

from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall, CallResult

#: JSON-RPC error codes DTM defines for a branch's FAILURE and ONGOING.
CODE_FAILURE = -32901
CODE_ONGOING = -32902
_DETAIL_MAX = 512


def json_rpc_method(url: str) -> str:
    """The `method` query parameter of a branch URL ("" when it has none)."""
    try:
        values = parse_qs(urlsplit(url).query).get("method")
    except ValueError:
        return ""
    return values[0] if values else ""


def request_body(call: BranchCall, method: str) -> bytes:
    """The JSON-RPC request for `call`; ValueError if its payload is not a JSON object."""
    params: object = {}
    if call.payload:
        try:
            params = orjson.loads(call.payload)
        except orjson.JSONDecodeError:
            raise ValueError("a json-rpc branch's payload must be a JSON object") from None
    if not isinstance(params, dict):
        raise ValueError("a json-rpc branch's payload must be a JSON object")
    params.update(gid=call.gid, trans_type=call.trans_type, branch_id=call.branch_id,
                  op=call.op)
    return orjson.dumps({"jsonrpc": "2.0", "id": uuid.uuid4().hex, "method": method,
                         "params": params})


def classify(http_outcome: Outcome, status: int, body: bytes) -> CallResult:
    """A JSON-RPC answer's result, after DTM's HTTP rule gave `http_outcome`."""
    text = body.decode("utf-8", "replace")
    if http_outcome is not Outcome.SUCCESS:
        return CallResult(http_outcome, f"{status} {text[:_DETAIL_MAX]}")
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return CallResult(Outcome.ERROR, f"not a JSON-RPC answer: {text[:_DETAIL_MAX]}")
    error = answer.get("error") if isinstance(answer, dict) else None
    if error is None:
        return CallResult(Outcome.SUCCESS)
    code = error.get("code") if isinstance(error, dict) else None
    # a code arrives as a JSON number: compare its value, whatever its Python type
    if isinstance(code, int | float) and code == CODE_FAILURE:
        return CallResult(Outcome.FAILURE, text[:_DETAIL_MAX])
    if isinstance(code, int | float) and code == CODE_ONGOING:
        return CallResult(Outcome.ONGOING, text[:_DETAIL_MAX])
    return CallResult(Outcome.ERROR, text[:_DETAIL_MAX])
