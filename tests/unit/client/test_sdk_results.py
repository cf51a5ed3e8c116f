"""Response -> exception mapping (client side) and outcome -> response (branch side)."""

import pytest

from dtmx.client import DtmError, Failure, Ongoing, result_for
from dtmx.client._errors import error_for_response


@pytest.mark.parametrize(
    ("status", "text", "kind"),
    [
        (200, '{"dtm_result":"SUCCESS"}', None),
        (200, "", None),
        (409, '{"dtm_result":"FAILURE","message":"no money"}', Failure),
        (409, "", Failure),
        (200, "FAILURE", Failure),  # old branches answer 200 with the word in the body
        (425, "", Ongoing),
        (200, '{"dtm_result":"ONGOING"}', Ongoing),
        (500, "FAILURE", Failure),
        (500, "boom", DtmError),
        (502, "", DtmError),
        (201, "", DtmError),
    ],
)
def test_error_for_response(status: int, text: str, kind: type[DtmError] | None) -> None:
    err = error_for_response(status, text)
    if kind is None:
        assert err is None
    else:
        assert type(err) is kind
        assert err.status == status


def test_message_comes_from_the_body() -> None:
    err = error_for_response(409, '{"dtm_result":"FAILURE","message":"insufficient balance"}')
    assert isinstance(err, Failure)
    assert err.message == "insufficient balance"
    assert str(err) == "insufficient balance"
    err = error_for_response(500, '{"error":"db down"}')
    assert err is not None and err.message == "db down"
    err = error_for_response(500, "plain text")
    assert err is not None and err.message == "plain text"


def test_default_message_is_the_docstring() -> None:
    assert "409" in Failure().message
    assert "425" in Ongoing().message


def test_result_for() -> None:
    assert result_for(None) == (200, {"dtm_result": "SUCCESS"})
    assert result_for(Failure("no")) == (409, {"dtm_result": "FAILURE", "message": "no"})
    assert result_for(Ongoing("wait")) == (425, {"dtm_result": "ONGOING", "message": "wait"})
    assert result_for(RuntimeError("x")) == (500, {"message": "x"})


def test_status_only_mapping_ignores_words_in_data() -> None:
    text = '{"transaction":{"rollback_reason":"branch said FAILURE"}}'
    assert isinstance(error_for_response(200, text), Failure)
    assert error_for_response(200, text, check_body=False) is None
    assert isinstance(error_for_response(409, text, check_body=False), Failure)
