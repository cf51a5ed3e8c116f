"""The JSON-RPC branch call: DTM's request, and its answers mapped (codes fixed)."""

from __future__ import annotations

import orjson
import pytest

from dtmx.core.models import Op, Outcome, TransType
from dtmx.invoke.base import BranchCall
from dtmx.invoke.json_rpc import classify, json_rpc_method, request_body


def test_method_from_the_url() -> None:
    assert json_rpc_method("http://b/api/json-rpc?method=TransIn") == "TransIn"
    assert json_rpc_method("http://b/api/json-rpc?x=1&method=A%20B") == "A B"
    assert json_rpc_method("http://b/method/TransIn") == ""


def test_request_carries_payload_and_branch() -> None:
    call = BranchCall(url="http://b/?method=M", gid="g", trans_type=TransType.SAGA,
                      branch_id="01", op=Op.ACTION, payload=b'{"amount": 3}', json_rpc=True)
    req = orjson.loads(request_body(call, "M"))
    assert req["jsonrpc"] == "2.0" and req["method"] == "M" and req["id"]
    assert req["params"] == {"amount": 3, "gid": "g", "trans_type": "saga", "branch_id": "01",
                             "op": "action"}
    empty = BranchCall(url="u", gid="g", trans_type=TransType.TCC, branch_id="01",
                       op=Op.CONFIRM, payload=b"")
    assert orjson.loads(request_body(empty, "M"))["params"]["op"] == "confirm"
    for bad in (b"[1]", b"nope"):
        with pytest.raises(ValueError, match="JSON object"):
            request_body(BranchCall(url="u", gid="g", trans_type=TransType.SAGA,
                                    branch_id="01", op=Op.ACTION, payload=bad), "M")


@pytest.mark.parametrize("answer, outcome", [
    ({"jsonrpc": "2.0", "id": "1", "result": None, "error": None}, Outcome.SUCCESS),
    ({"jsonrpc": "2.0", "id": "1", "result": {}}, Outcome.SUCCESS),
    ({"error": {"code": -32901, "message": "x"}}, Outcome.FAILURE),
    ({"error": {"code": -32901.0}}, Outcome.FAILURE),  # DTM's bug: a float never matched
    ({"error": {"code": -32902}}, Outcome.ONGOING),
    ({"error": {"code": -23977}}, Outcome.ERROR),
    ({"error": "text"}, Outcome.ERROR),
])
def test_answers(answer: object, outcome: Outcome) -> None:
    assert classify(Outcome.SUCCESS, 200, orjson.dumps(answer)).outcome is outcome


def test_http_rule_comes_first() -> None:
    assert classify(Outcome.FAILURE, 409, b"{}").outcome is Outcome.FAILURE
    assert classify(Outcome.SUCCESS, 200, b"<html>").outcome is Outcome.ERROR
