"""The OpenAPI document describes exactly the routes the HTTP API serves: the API's own and
the admin UI's JSON routes."""

from __future__ import annotations

import orjson

from dtmx.admin.routes import JSON_ROUTES
from dtmx.api.http import HttpApi, openapi_document


def test_every_route_is_in_the_document_and_nothing_else() -> None:
    doc = orjson.loads(openapi_document())
    assert doc["openapi"].startswith("3.1")
    api = HttpApi.__new__(HttpApi)  # the route table only reads bound methods
    served = {(m.lower(), p) for m, p, _ in HttpApi.routes(api)}
    served |= {(m.lower(), p) for m, p in JSON_ROUTES}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
