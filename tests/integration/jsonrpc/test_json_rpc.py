"""DTM's JSON-RPC API and json-rpc branches against a real server, with a raw JSON-RPC
client: saga, msg and TCC, normal and rolled back; DTM's error codes; bad input."""

from __future__ import annotations

import json
from typing import Any

import requests

from tests.support.jrpc_busi import JsonRpcBranches, new_gid, rpc
from tests.support.server import ServerProcess
from tests.support.util import eventually, free_port

PAYLOAD = {"amount": 30}


def ok(answer: dict[str, Any]) -> Any:
    assert answer.get("error") is None, answer
    return answer["result"]


def error_code(answer: dict[str, Any]) -> int:
    assert answer.get("error"), answer
    code: int = answer["error"]["code"]
    return code


def saga(gid: str, busi: JsonRpcBranches) -> dict[str, Any]:
    return {
        "gid": gid, "trans_type": "saga", "protocol": "json-rpc",
        "steps": [
            {"action": busi.url("TransOut"), "compensate": busi.url("TransOutRevert")},
            {"action": busi.url("TransIn"), "compensate": busi.url("TransInRevert")},
        ],
        "payloads": [json.dumps(PAYLOAD), json.dumps(PAYLOAD)],
    }


def test_new_gid_on_both_ports(server: ServerProcess, jrpc_url: str) -> None:
    assert ok(rpc(jrpc_url, "newGid"))["gid"]
    assert ok(rpc(f"{server.base}/api/json-rpc", "newGid", rid=7))["gid"]


def test_saga_normal(server: ServerProcess, jrpc_url: str, busi: JsonRpcBranches) -> None:
    gid = new_gid("saga")
    ok(rpc(jrpc_url, "submit", saga(gid, busi)))
    server.wait_status(gid, "succeed")
    assert busi.methods(gid) == ["TransOut", "TransIn"]
    params = busi.params(gid, "TransIn")[0]
    assert params == {**PAYLOAD, "gid": gid, "trans_type": "saga", "branch_id": "02",
                      "op": "action"}
    assert server.query(gid)["transaction"]["protocol"] == "json-rpc"


def test_saga_rollback(server: ServerProcess, jrpc_url: str, busi: JsonRpcBranches) -> None:
    """FAILURE (-32901) rolls the saga back at once (DTM would retry it as an error)."""
    gid = new_gid("sagarb")
    busi.results["TransIn"] = "FAILURE"
    ok(rpc(jrpc_url, "submit", saga(gid, busi)))
    server.wait_status(gid, "failed")
    assert busi.methods(gid) == ["TransOut", "TransIn", "TransInRevert", "TransOutRevert"]


def test_ongoing_and_other_errors_are_retried(server: ServerProcess, jrpc_url: str,
                                              busi: JsonRpcBranches) -> None:
    gid = new_gid("retry")
    busi.once["TransOut"] = ["ONGOING", "OTHER"]
    ok(rpc(jrpc_url, "submit", saga(gid, busi)))
    server.wait_status(gid, "succeed")
    assert busi.methods(gid) == ["TransOut", "TransOut", "TransOut", "TransIn"]


def msg(gid: str, busi: JsonRpcBranches) -> dict[str, Any]:
    return {
        "gid": gid, "trans_type": "msg", "protocol": "json-rpc",
        "steps": [{"action": busi.url("TransOut")}, {"action": busi.url("TransIn")}],
        "payloads": [json.dumps(PAYLOAD), json.dumps(PAYLOAD)],
        "query_prepared": busi.url("QueryPrepared"),
    }


def test_msg_normal(server: ServerProcess, jrpc_url: str, busi: JsonRpcBranches) -> None:
    gid = new_gid("msg")
    ok(rpc(jrpc_url, "prepare", msg(gid, busi)))
    ok(rpc(jrpc_url, "submit", msg(gid, busi)))
    server.wait_status(gid, "succeed")
    assert busi.methods(gid) == ["TransOut", "TransIn"]


def test_msg_rollback_by_query_prepared(server: ServerProcess, jrpc_url: str,
                                        busi: JsonRpcBranches) -> None:
    """A prepared msg left unsubmitted: its query_prepared, called with JSON-RPC, answers
    FAILURE and the msg fails without calling its steps."""
    gid = new_gid("msgrb")
    busi.results["QueryPrepared"] = "FAILURE"
    ok(rpc(jrpc_url, "prepare", {**msg(gid, busi), "timeout_to_fail": 1}))
    server.wait_status(gid, "failed")
    assert busi.methods(gid) == ["QueryPrepared"]
    assert busi.params(gid, "QueryPrepared")[0]["op"] == "msg"


def tcc_branch(gid: str, busi: JsonRpcBranches, branch_id: str, name: str) -> dict[str, str]:
    return {"gid": gid, "trans_type": "tcc", "branch_id": branch_id, "data": json.dumps(PAYLOAD),
            "confirm": busi.url(f"{name}Confirm"), "cancel": busi.url(f"{name}Cancel")}


def test_tcc_normal_and_rollback(server: ServerProcess, jrpc_url: str,
                                 busi: JsonRpcBranches) -> None:
    for end, final, second in (("submit", "succeed", "Confirm"), ("abort", "failed", "Cancel")):
        gid = new_gid(f"tcc{end}")
        head = {"gid": gid, "trans_type": "tcc", "protocol": "json-rpc"}
        ok(rpc(jrpc_url, "prepare", head))
        ok(rpc(jrpc_url, "registerBranch", tcc_branch(gid, busi, "01", "TransOut")))
        ok(rpc(jrpc_url, "registerBranch", tcc_branch(gid, busi, "02", "TransIn")))
        ok(rpc(jrpc_url, end, head))
        server.wait_status(gid, final)
        # TCC's second phase runs in reverse registration order
        assert busi.methods(gid) == [f"TransIn{second}", f"TransOut{second}"]
        assert busi.params(gid, f"TransIn{second}")[0]["op"] == second.lower()


def test_failure_of_a_verb_is_dtm_failure_code(jrpc_url: str, busi: JsonRpcBranches,
                                               server: ServerProcess) -> None:
    gid = new_gid("verb")
    head = {"gid": gid, "trans_type": "tcc", "protocol": "json-rpc"}
    ok(rpc(jrpc_url, "prepare", head))
    ok(rpc(jrpc_url, "abort", head))
    server.wait_status(gid, "failed")
    assert error_code(rpc(jrpc_url, "submit", head)) == -32901


def test_bad_input_is_a_json_rpc_error(jrpc_url: str) -> None:
    r = requests.post(jrpc_url, data=b"hello", timeout=5)
    assert r.status_code == 200 and r.json()["error"]["code"] == -32700
    r = requests.post(jrpc_url, json={"jsonrpc": "1.0", "method": "newGid", "id": "x"}, timeout=5)
    assert r.json()["error"]["code"] == -32600
    r = requests.post(jrpc_url, json={"jsonrpc": "2.0", "method": "newGid"}, timeout=5)
    assert r.json()["error"]["code"] == -32600  # notifications are not supported
    r = requests.post(jrpc_url, json=[1, 2], timeout=5)
    assert r.json()["error"]["code"] == -32600
    answer = rpc(jrpc_url, "not-exists")
    assert error_code(answer) == -32601 and "not-exists" in answer["error"]["message"]
    answer = rpc(jrpc_url, "submit", "hello")
    assert error_code(answer) == -32602 and "JSON object" in answer["error"]["message"]
    answer = rpc(jrpc_url, "registerBranch", {"trans_type": "not-exists", "gid": "g"})
    assert error_code(answer) == -32602
    answer = rpc(jrpc_url, "submit", {"gid": "a b", "trans_type": "saga"})
    assert error_code(answer) == -32602 and "gid" in answer["error"]["message"]


def test_branch_policy_applies_to_json_rpc_urls(jrpc_url: str) -> None:
    gid = new_gid("policy")
    body = {"gid": gid, "trans_type": "saga", "protocol": "json-rpc", "steps": [
        {"action": "http://169.254.169.254/api/json-rpc?method=Steal", "compensate": ""}],
        "payloads": ["{}"]}
    answer = rpc(jrpc_url, "submit", body)
    assert error_code(answer) == -32602 and "169.254.169.254" in answer["error"]["message"]


def test_non_object_payload_of_a_json_rpc_branch_is_retried_with_a_reason(
    server: ServerProcess, jrpc_url: str, busi: JsonRpcBranches
) -> None:
    gid = new_gid("payload")
    body = {"gid": gid, "trans_type": "saga", "protocol": "json-rpc", "retry_limit": 1,
            "steps": [{"action": busi.url("TransOut"), "compensate": ""}], "payloads": ["[1]"]}
    ok(rpc(jrpc_url, "submit", body))
    eventually(lambda: server.status(gid) in ("failed", "submitted"))
    assert busi.methods(gid) == []


def test_tokens_guard_both_json_rpc_endpoints(tmp_path_factory: Any) -> None:
    """With Auth, the route needs a token of role client, on the HTTP port and JsonRpcPort."""
    workdir = str(tmp_path_factory.mktemp("jrpc-auth"))
    auth = {"Tokens": [{"Name": "svc", "Token": "client-token-0123456789", "Role": "client"}]}
    port = free_port()
    with ServerProcess(extra={"Auth": auth, "JsonRpcPort": port}, workdir=workdir,
                       token="client-token-0123456789") as s:
        for url in (f"{s.base}/api/json-rpc", f"http://127.0.0.1:{port}/api/json-rpc"):
            body = {"jsonrpc": "2.0", "id": 1, "method": "newGid"}
            assert requests.post(url, json=body, timeout=5).status_code == 401
            bad = {"Authorization": "Bearer wrong-token-0123456789"}
            assert requests.post(url, json=body, headers=bad, timeout=5).status_code == 401
            good = {"Authorization": "Bearer client-token-0123456789"}
            assert ok(rpc(url, "newGid", headers=good))["gid"]
