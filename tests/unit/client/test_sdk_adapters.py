"""Branch-side adapters for Starlette/FastAPI and aiohttp.web, served for real."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from dtmx.client import Failure, Ongoing
from dtmx.client import aiohttp_web as aw
from dtmx.client import starlette as st
from tests.support.util import free_port

Q = {"gid": "g", "trans_type": "saga", "branch_id": "01", "op": "action"}


def _starlette_app() -> Starlette:
    @st.dtm_endpoint
    async def ok(request: Request) -> None:
        assert st.branch_info(request).gid == "g"

    @st.dtm_endpoint
    async def fail(request: Request) -> None:
        raise Failure("no money")

    @st.dtm_endpoint
    async def later(request: Request) -> None:
        raise Ongoing("wait")

    async def plain(request: Request) -> None:
        raise Failure("via handler")

    app = Starlette(
        routes=[
            Route("/ok", ok, methods=["POST"]),
            Route("/fail", fail, methods=["POST"]),
            Route("/later", later, methods=["POST"]),
            Route("/plain", plain, methods=["POST"]),
        ]
    )
    st.install(app)
    return app


def test_starlette() -> None:
    with TestClient(_starlette_app()) as c:
        r = c.post("/ok", params=Q)
        assert (r.status_code, r.json()) == (200, {"dtm_result": "SUCCESS"})
        r = c.post("/fail", params=Q)
        assert (r.status_code, r.json()) == (409, {"dtm_result": "FAILURE", "message": "no money"})
        r = c.post("/later", params=Q)
        assert r.status_code == 425 and r.json()["dtm_result"] == "ONGOING"
        r = c.post("/plain", params=Q)
        assert r.status_code == 409 and r.json()["message"] == "via handler"


def test_fastapi_keeps_signature() -> None:
    app = FastAPI()

    @app.post("/transout")
    @st.dtm_endpoint
    async def trans_out(body: dict[str, Any], gid: str, op: str) -> Any:
        if body["amount"] > 10:
            raise Failure("too much")
        if op == "compensate":
            return {"undone": gid}
        return None

    with TestClient(app) as c:
        r = c.post("/transout", params=Q, json={"amount": 1})
        assert (r.status_code, r.json()) == (200, {"dtm_result": "SUCCESS"})
        r = c.post("/transout", params=Q, json={"amount": 11})
        assert r.status_code == 409 and r.json()["dtm_result"] == "FAILURE"
        r = c.post("/transout", params={**Q, "op": "compensate"}, json={"amount": 1})
        assert r.json() == {"undone": "g"}


async def test_aiohttp_web() -> None:
    @aw.dtm_handler
    async def ok(request: web.Request) -> None:
        assert aw.branch_info(request).op == "action"

    @aw.dtm_handler
    async def fail(request: web.Request) -> None:
        raise Failure("no")

    @aw.dtm_handler
    async def data(request: web.Request) -> dict[str, Any]:
        return {"x": 1}

    async def plain(request: web.Request) -> web.Response:
        raise Ongoing("later")

    app = web.Application(middlewares=[aw.dtm_middleware])
    app.router.add_post("/ok", ok)
    app.router.add_post("/fail", fail)
    app.router.add_post("/data", data)
    app.router.add_post("/plain", plain)
    server = TestServer(app, port=free_port())
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:

            async def post(path: str) -> tuple[int, Any]:
                async with s.post(server.make_url(path), params=Q) as r:
                    return r.status, await r.json()

            assert await post("/ok") == (200, {"dtm_result": "SUCCESS"})
            assert await post("/fail") == (409, {"dtm_result": "FAILURE", "message": "no"})
            assert await post("/data") == (200, {"x": 1})
            assert await post("/plain") == (425, {"dtm_result": "ONGOING", "message": "later"})
    finally:
        await server.close()
