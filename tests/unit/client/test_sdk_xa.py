"""XA helpers without a database: query parsing, statements per dialect, finished errors."""

from __future__ import annotations

from typing import Any

import pytest

from dtmx.client import InvalidBranchInfo, Op, XaBranchInfo
from dtmx.client._xa_local import XaStep, is_finished, xa_sql
from dtmx.client.barrier import Dialect

QUERY = {"gid": "g1", "branch_id": "01", "op": "action", "trans_type": "xa",
         "phase2_url": "http://b/x"}


def test_branch_info_from_query() -> None:
    info = XaBranchInfo.from_query(QUERY)
    assert (info.xid, info.op, info.phase2_url) == ("g1-01", Op.ACTION, "http://b/x")
    assert info.registration() == {"gid": "g1", "trans_type": "xa", "branch_id": "01",
                                   "url": "http://b/x"}
    assert XaBranchInfo.from_query({**QUERY, "op": "commit", "phase2_url": ""}).op is Op.COMMIT


@pytest.mark.parametrize("change, words", [
    ({"gid": ""}, "missing gid"),
    ({"trans_type": "tcc"}, "trans_type 'tcc'"),
    ({"op": "try"}, "op 'try'"),
    ({"phase2_url": ""}, "missing phase2_url"),
])
def test_bad_query_is_named(change: dict[str, str], words: str) -> None:
    with pytest.raises(InvalidBranchInfo, match=words):
        XaBranchInfo.from_query({**QUERY, **change})


def test_statements_quote_the_xid() -> None:
    assert xa_sql(Dialect.MYSQL, XaStep.START, "a'b\\c") == "XA START 'a''b\\\\c'"
    assert xa_sql(Dialect.MYSQL, XaStep.ABORT, "x") == "XA ROLLBACK 'x'"
    assert xa_sql(Dialect.POSTGRES, XaStep.START, "x") == "BEGIN"
    assert xa_sql(Dialect.POSTGRES, XaStep.END, "x") is None
    assert xa_sql(Dialect.POSTGRES, XaStep.PREPARE, "a'b") == "PREPARE TRANSACTION 'a''b'"
    assert xa_sql(Dialect.POSTGRES, XaStep.ROLLBACK, "x") == "ROLLBACK PREPARED 'x'"
    with pytest.raises(ValueError, match="64 bytes"):
        xa_sql(Dialect.MYSQL, XaStep.START, "g" * 65)
    with pytest.raises(ValueError, match="not sqlite"):
        xa_sql(Dialect.SQLITE, XaStep.START, "x")


def test_finished_errors() -> None:
    nota = Exception(1397, "XAER_NOTA: Unknown XID")
    gone = Exception('prepared transaction with identifier "x" does not exist')
    rolled = Exception(1402, "XA_RBROLLBACK: Transaction branch was rolled back")
    assert is_finished(nota, Op.COMMIT) and is_finished(gone, Op.ROLLBACK)
    assert is_finished(rolled, Op.ROLLBACK)
    assert not is_finished(rolled, Op.COMMIT)  # committing a rolled back branch lost work
    assert not is_finished(Exception("connection refused"), Op.COMMIT)


class _NoDb:
    """A connect() that must not be reached: bad calls are refused before any connection."""

    def __call__(self) -> Any:
        raise AssertionError("connected for a bad call")


async def _busi(conn: Any, payload: Any) -> None:
    raise AssertionError("business ran for a bad call")


def test_starlette_xa_endpoint_refuses_bad_calls() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from dtmx.client import DtmClient
    from dtmx.client.starlette import xa_endpoint

    endpoint = xa_endpoint(DtmClient("http://127.0.0.1:9"), _NoDb(), _busi)
    app = Starlette(routes=[Route("/x", endpoint, methods=["POST"])])
    with TestClient(app) as http:
        r = http.post("/x", params={"gid": "g"})
        assert r.status_code == 400 and "missing branch_id" in r.json()["message"]
        r = http.post("/x", params=QUERY, content=b"{not json")
        assert r.status_code == 400


async def test_aiohttp_xa_handler_refuses_bad_calls() -> None:
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from dtmx.client import DtmClient
    from dtmx.client.aiohttp_web import xa_handler

    app = web.Application()
    app.router.add_post("/x", xa_handler(DtmClient("http://127.0.0.1:9"), _NoDb(), _busi))
    bad = {**QUERY, "trans_type": "saga"}
    async with (
        TestServer(app) as srv,
        aiohttp.ClientSession() as http,
        http.post(srv.make_url("/x"), params=bad) as r,
    ):
        assert r.status == 400
        assert "trans_type 'saga'" in (await r.json())["message"]
