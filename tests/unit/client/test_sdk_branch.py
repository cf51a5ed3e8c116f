"""Branch ids and branch parameters."""

import pytest

from dtmx.client import (
    BranchInfo,
    DtmClient,
    DtmError,
    InvalidBranchInfo,
    Op,
    Tcc,
    TransType,
)
from dtmx.client._base import BranchIdGen


def test_branch_ids() -> None:
    gen = BranchIdGen()
    assert [gen.new_id() for _ in range(3)] == ["01", "02", "03"]
    assert gen.current() == "03"
    nested = BranchIdGen("01")
    assert nested.new_id() == "0101"
    assert nested.new_id() == "0102"


def test_branch_id_limits() -> None:
    gen = BranchIdGen()
    for _ in range(99):
        gen.new_id()
    with pytest.raises(DtmError):
        gen.new_id()
    with pytest.raises(DtmError):
        BranchIdGen("01" * 10).new_id()


def test_nested_tcc_ids() -> None:
    client = DtmClient("http://127.0.0.1:1/api/dtmsvr")
    tcc = Tcc.from_branch(client, "g", "02")
    assert tcc.nested
    assert tcc.ids.new_id() == "0201"
    q = {"gid": "g", "trans_type": "tcc", "branch_id": "03", "op": "try"}
    assert Tcc.from_query(client, q).ids.new_id() == "0301"
    with pytest.raises(ValueError):
        Tcc.from_branch(client, "g", "")


def test_branch_info() -> None:
    info = BranchInfo.from_query(
        {"gid": "g", "trans_type": "saga", "branch_id": "01", "op": "action", "dtm": "x"}
    )
    assert info == BranchInfo("g", TransType.SAGA, "01", Op.ACTION)


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ({}, "gid, trans_type, branch_id, op"),
        ({"gid": "g", "trans_type": "saga", "branch_id": "01"}, "missing op"),
        ({"gid": "g", "trans_type": "nope", "branch_id": "01", "op": "try"}, "trans_type"),
        ({"gid": "g", "trans_type": "tcc", "branch_id": "01", "op": "nope"}, "op"),
    ],
)
def test_branch_info_errors(query: dict[str, str], match: str) -> None:
    with pytest.raises(InvalidBranchInfo, match=match):
        BranchInfo.from_query(query)
    with pytest.raises(ValueError):  # also a ValueError, for frameworks that map those to 400
        BranchInfo.from_query(query)
