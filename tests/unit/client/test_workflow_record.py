"""The workflow SDK's pure parts: recorded data, prepareWorkflow's answer, WorkflowData."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtmx.client import DtmError, Status
from dtmx.client.workflow._outcome import path_of
from dtmx.client.workflow._record import (
    custom_data,
    decode,
    encode,
    parse_progress,
    submit_extra,
    to_bytes,
)
from dtmx.client.workflow.grpc import decode_workflow_data, encode_workflow_data


@given(st.text(min_size=1), st.binary())
def test_recorded_data_round_trips(step: str, data: bytes) -> None:
    raw = encode(step, data).encode()
    name, body = decode(raw)
    assert body == data
    assert name == " ".join(step.split())


def test_text_stays_readable_binary_goes_base64() -> None:
    assert encode("http POST /TransIn", b'{"ok":1}') == 'dtmx1 http POST /TransIn\n{"ok":1}'
    assert encode("grpc /a.B/C", b"\xff\x00").startswith("dtmx1b grpc /a.B/C\n")


def test_data_without_header_has_no_step() -> None:
    assert decode(b"plain result") == (None, b"plain result")


def test_parse_progress_reads_dtmx_and_protojson_shapes() -> None:
    rec = base64.b64encode(encode("local x", b"r").encode()).decode()
    snake = {
        "transaction": {"gid": "g", "status": "prepared", "rollback_reason": "", "result": ""},
        "progresses": [
            {"branch_id": "01", "op": "action", "status": "succeed", "bin_data": rec},
            {"branch_id": "01", "op": "action", "status": "failed", "bin_data": ""},
        ],
    }
    camel = {
        "transaction": {"gid": "g", "status": "prepared", "rollbackReason": ""},
        "progresses": [{"branchID": "01", "op": "action", "status": "succeed", "binData": rec}],
    }
    go_json = {  # DTM's own server: Go's encoding/json of the protobuf struct
        "Transaction": {"Gid": "g", "Status": "prepared", "RollbackReason": ""},
        "Progresses": [{"BranchID": "01", "Op": "action", "Status": "succeed", "BinData": rec}],
    }
    for reply in (snake, camel, go_json):
        p = parse_progress(reply)
        assert p.status is Status.PREPARED
        r = p.steps[("01", "action")]
        assert (r.status, r.step, r.data) == (Status.SUCCEED, "local x", b"r")  # first wins


def test_parse_progress_refuses_garbage() -> None:
    with pytest.raises(DtmError, match="unknown status"):
        parse_progress({"transaction": {"status": "weird"}})
    with pytest.raises(DtmError, match="base64"):
        parse_progress({"transaction": {"status": "succeed", "result": "%%%"}})


def test_bodies_as_dtms_go_client_writes_them() -> None:
    assert custom_data("wf", b"\x01") == '{"name":"wf","data":"AQ=="}'
    assert submit_extra(Status.FAILED, b"", "no") == {
        "status": "failed", "rollback_reason": "no", "result": ""
    }
    assert to_bytes({"a": 1}) == b'{"a":1}'
    assert to_bytes(None) == b"" and to_bytes("é") == "é".encode()


@given(st.binary())
def test_workflow_data_round_trips(data: bytes) -> None:
    assert decode_workflow_data(encode_workflow_data(data)) == data


def test_workflow_data_skips_unknown_fields_and_refuses_garbage() -> None:
    assert decode_workflow_data(b"\x10\x05" + encode_workflow_data(b"x")) == b"x"
    with pytest.raises(ValueError):
        decode_workflow_data(b"\x0a\x05ab")
    with pytest.raises(ValueError):
        decode_workflow_data(b"\x0b")


def test_step_names_use_the_path_not_the_host() -> None:
    assert path_of("http://h:1/api/TransIn?x=1") == "/api/TransIn"
    assert path_of("h:1/pkg.Svc/Method") == "/pkg.Svc/Method"


def test_resume_endpoint_in_fastapi_refuses_bad_calls_with_4xx() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from dtmx.client import DtmClient
    from dtmx.client.workflow import Workflows, starlette_endpoint

    # no server needed: both calls are refused before the workflow would prepare
    wfs = Workflows(DtmClient("http://127.0.0.1:9/api/dtmsvr"), "http://127.0.0.1:9/cb")
    app = FastAPI()
    app.add_api_route("/cb", starlette_endpoint(wfs), methods=["GET", "POST"])
    with TestClient(app) as http:
        r = http.post("/cb")
        assert r.status_code == 400 and "gid" in r.json()["message"]
        r = http.post("/cb", params={"gid": "g", "op": "nope", "trans_type": "workflow"})
        assert r.status_code == 404 and "'nope' is not registered" in r.json()["message"]
