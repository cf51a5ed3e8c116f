"""The resume endpoint: the server calls it for an unfinished workflow, and it runs again.

The server POSTs ``callback?gid=..&trans_type=workflow&branch_id=00&op=<name>`` with the
workflow's input as body (a GET when the input is empty, as DTM's server does: serve
both); the answer is 200 when the workflow has finished, 409 when it failed, 425 when it
is still ongoing, and another status (retried with backoff) on error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from dtmx.client._branch import result_for
from dtmx.client._consts import TransType
from dtmx.client._errors import InvalidBranchInfo, Rejected

if TYPE_CHECKING:
    from aiohttp import web
    from starlette.requests import Request
    from starlette.responses import Response

    from dtmx.client.workflow._registry import Workflows


async def resume(workflows: Workflows, query: Mapping[str, str], body: bytes) -> tuple[int, Any]:
    """Run the workflow a resume call names; (HTTP status, JSON body) of the answer."""
    gid, name = query.get("gid") or "", query.get("op") or ""
    trans_type = query.get("trans_type") or TransType.WORKFLOW.value
    if not gid or not name or trans_type != TransType.WORKFLOW.value:
        err = InvalidBranchInfo(
            "not a workflow resume call: expected gid, op=<workflow name>, trans_type=workflow"
        )
        return 400, {"message": err.message}
    try:
        await workflows.execute(name, gid, body, wait=False)
    except Rejected as e:
        return e.status or 404, {"message": e.message}
    except Exception as e:  # every outcome becomes an answer
        return result_for(e)
    return result_for(None)


def starlette_endpoint(workflows: Workflows) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette/FastAPI endpoint for the resume URL:
    ``app.add_api_route("/workflow/resume", starlette_endpoint(wfs), methods=["GET", "POST"])``
    (GET: the server's call for a workflow whose input is empty)."""

    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    async def endpoint(request: Request) -> Response:
        status, body = await resume(workflows, request.query_params, await request.body())
        return JSONResponse(body, status_code=status)

    # FastAPI reads the parameter's type to inject the request: give it the class itself,
    # not the postponed annotation's string.
    endpoint.__annotations__ = {"request": Request, "return": Response}
    return endpoint


def aiohttp_handler(workflows: Workflows) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp.web handler for the resume URL:
    ``app.router.add_route("*", "/workflow/resume", aiohttp_handler(wfs))`` (GET and POST)."""

    async def handler(request: web.Request) -> web.Response:
        from aiohttp import web

        status, body = await resume(workflows, request.query, await request.read())
        return web.json_response(body, status=status)

    return handler
