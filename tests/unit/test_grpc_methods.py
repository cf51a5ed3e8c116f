"""The gRPC handler table covers every method of dtmgimp.Dtm, with the proto's types."""

from __future__ import annotations

import pytest

from dtmx.api.grpc_api import _METHODS, SERVICE_NAME, Malformed, _before_write, _lenient
from dtmx.errors import DeadlineExpired
from dtmx.proto import dtmgimp_pb2


def test_every_method_has_a_handler_with_its_types() -> None:
    service = dtmgimp_pb2.DESCRIPTOR.services_by_name["Dtm"]
    assert service.full_name == SERVICE_NAME
    assert set(_METHODS) == {m.name for m in service.methods}
    for m in service.methods:
        req, resp = _METHODS[m.name]
        assert (req.DESCRIPTOR.full_name, resp.DESCRIPTOR.full_name) == (
            m.input_type.full_name, m.output_type.full_name)


def test_malformed_bytes_become_malformed_not_an_exception() -> None:
    parse = _lenient(dtmgimp_pb2.DtmRequest)
    bad = parse(b"\xff\xff\xff\xff\x0f\x01")
    assert isinstance(bad, Malformed) and "dtmgimp.DtmRequest" in bad.message
    assert parse(dtmgimp_pb2.DtmRequest(Gid="g").SerializeToString()).Gid == "g"


def test_workflow_callback_service_matches_dtms() -> None:
    """The server calls `host:port/workflow.Workflow/Execute` with a WorkflowData{Data}
    (DTM's client/workflow/wfpb/wf.proto): names and field numbers must match."""
    from dtmx.proto import wf_pb2

    service = wf_pb2.DESCRIPTOR.services_by_name["Workflow"]
    [execute] = service.methods
    assert (service.full_name, execute.name) == ("workflow.Workflow", "Execute")
    assert (execute.input_type.full_name, execute.output_type.full_name) == (
        "workflow.WorkflowData", "google.protobuf.Empty")
    [data] = wf_pb2.WorkflowData.DESCRIPTOR.fields
    assert (data.name, data.number, data.type) == ("Data", 1, data.TYPE_BYTES)
    assert wf_pb2.WorkflowData(Data=b"x").SerializeToString() == b"\n\x01x"


class _Remaining:
    """What _before_write reads of a call's context: the time left to its deadline."""

    def __init__(self, left: float | None) -> None:
        self.left = left

    def time_remaining(self) -> float | None:
        return self.left


def test_a_call_already_past_its_deadline_is_refused_before_any_write() -> None:
    for left in (0.0, -0.5):
        with pytest.raises(DeadlineExpired):
            _before_write(_Remaining(left))  # type: ignore[arg-type]
    for left in (None, 0.2):  # no deadline, or time left: go on
        _before_write(_Remaining(left))  # type: ignore[arg-type]
