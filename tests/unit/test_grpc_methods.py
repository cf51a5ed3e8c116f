"""The gRPC handler table covers every method of dtmgimp.Dtm, with the proto's types."""

from __future__ import annotations

from dtmx.api.grpc_api import _METHODS, SERVICE_NAME, Malformed, _lenient
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
