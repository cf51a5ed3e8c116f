"""Transaction bodies as the server receives them."""

from dataclasses import dataclass

import orjson
import pytest

from dtmx.client import DtmClient, Msg, Saga, Tcc
from dtmx.client._base import payload_text

URL = "http://127.0.0.1:1/api/dtmsvr"


@pytest.fixture
def client() -> DtmClient:
    return DtmClient(URL)


@dataclass
class Req:
    amount: int


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ({"amount": 30}, '{"amount":30}'),
        ([1, 2], "[1,2]"),
        ('{"raw":true}', '{"raw":true}'),
        (b'{"b":1}', '{"b":1}'),
        (None, ""),
        (Req(5), '{"amount":5}'),
    ],
)
def test_payload_text(payload: object, text: str) -> None:
    assert payload_text(payload) == text


def test_saga_body(client: DtmClient) -> None:
    saga = (
        Saga(client, "g1")
        .add("http://b/out", "http://b/out-revert", {"amount": 30})
        .add("http://b/in", "http://b/in-revert", None)
    )
    assert saga.to_body() == {
        "gid": "g1",
        "trans_type": "saga",
        "protocol": "http",
        "concurrent": False,
        "steps": [
            {"action": "http://b/out", "compensate": "http://b/out-revert"},
            {"action": "http://b/in", "compensate": "http://b/in-revert"},
        ],
        "payloads": ['{"amount":30}', ""],
    }


def test_saga_options_as_attributes_and_builder(client: DtmClient) -> None:
    saga = client.saga("g2").add("a", "c", {})
    saga.wait_result = True
    saga.set_options(
        timeout_to_fail=60,
        retry_interval=5,
        request_timeout=3,
        retry_limit=4,
        branch_headers={"X-Test": "1"},
    )
    body = saga.to_body()
    assert body["wait_result"] is True
    assert body["timeout_to_fail"] == 60
    assert body["retry_interval"] == 5
    assert body["request_timeout"] == 3
    assert body["retry_limit"] == 4
    assert body["branch_headers"] == {"X-Test": "1"}
    assert "custom_data" not in body


def test_concurrent_saga_custom_data(client: DtmClient) -> None:
    saga = client.saga("g3")
    for i in range(3):
        saga.add(f"a{i}", f"c{i}", {"i": i})
    saga.add_branch_order(2, [0, 1])
    body = saga.to_body()
    assert body["concurrent"] is True
    assert orjson.loads(body["custom_data"]) == {"concurrent": True, "orders": {"2": [0, 1]}}


def test_enable_concurrent_without_orders(client: DtmClient) -> None:
    body = client.saga("g").add("a", "c").enable_concurrent().to_body()
    assert orjson.loads(body["custom_data"]) == {"concurrent": True, "orders": {}}


def test_branch_order_validation(client: DtmClient) -> None:
    saga = client.saga("g").add("a", "c")
    with pytest.raises(ValueError):
        saga.add_branch_order(1, [1])
    saga.add_branch_order(3, [0])
    with pytest.raises(ValueError, match="step 3"):
        saga.to_body()


def test_empty_gid_rejected(client: DtmClient) -> None:
    with pytest.raises(ValueError):
        client.saga("")


def test_msg_body(client: DtmClient) -> None:
    msg = Msg(client, "m1").add("http://b/in", {"a": 1}).add_topic("orders", {"b": 2}).set_delay(7)
    msg.query_prepared = "http://b/qp"
    assert msg.to_body() == {
        "gid": "m1",
        "trans_type": "msg",
        "protocol": "http",
        "concurrent": False,
        "custom_data": '{"delay":7}',
        "steps": [{"action": "http://b/in"}, {"action": "topic://orders"}],
        "payloads": ['{"a":1}', '{"b":2}'],
        "query_prepared": "http://b/qp",
    }


def test_msg_negative_delay(client: DtmClient) -> None:
    with pytest.raises(ValueError):
        client.msg("m").set_delay(-1)


def test_tcc_body_and_rollback_reason(client: DtmClient) -> None:
    tcc = Tcc(client, "t1")
    tcc.timeout_to_fail = 30
    assert tcc.to_body() == {
        "gid": "t1",
        "trans_type": "tcc",
        "protocol": "http",
        "concurrent": False,
        "timeout_to_fail": 30,
    }
    tcc.rollback_reason = "boom"
    assert tcc.to_body()["rollback_reason"] == "boom"


def test_binary_payload_kept_as_bytes_for_grpc_and_refused_over_http() -> None:
    from dtmx.client._base import encode_payload
    from dtmx.client._errors import DtmError
    from dtmx.client._http import _text_payloads
    from dtmx.client.grpc import dtm_request

    raw = b"\x08\x96\x01\xff"  # a serialized protobuf, not UTF-8
    assert encode_payload(raw) == raw
    assert encode_payload({"a": 1}) == '{"a":1}'
    assert dtm_request({"gid": "g", "trans_type": "saga", "payloads": [raw]}).BinPayloads == [raw]
    assert _text_payloads({"payloads": [b"{}"]}) == {"payloads": ["{}"]}
    import pytest

    with pytest.raises(DtmError, match="gRPC transport"):
        _text_payloads({"payloads": [raw]})
