"""Branch handlers in aiohttp.web: a decorator and a middleware.

    @dtm_handler
    async def trans_out(request: web.Request) -> None:
        info = branch_info(request)
        ...                                  # raise Failure to roll back

An XA branch (both of its phases, at one URL):

    app.router.add_post("/TransOutXa", xa_handler(client, pool.acquire, trans_out))
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dtmx.client._branch import BranchInfo, result_for
from dtmx.client._errors import Failure, Ongoing
from dtmx.client._xa_local import Connect, XaBusiness, serve_xa
from dtmx.client.barrier._sql import DEFAULT_TABLE

if TYPE_CHECKING:
    from dtmx.client._client import DtmClient

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def branch_info(request: web.Request) -> BranchInfo:
    """The DTM branch parameters of `request` (raises `InvalidBranchInfo`)."""
    return BranchInfo.from_query(request.query)


def dtm_response(exc: BaseException | None = None) -> web.Response:
    """The JSON response a branch gives for its outcome (see `result_for`)."""
    status, body = result_for(exc)
    return web.json_response(body, status=status)


def dtm_handler(
    fn: Callable[[web.Request], Awaitable[web.StreamResponse | Mapping[str, Any] | None]],
) -> Handler:
    """Turn `Failure`/`Ongoing` into 409/425, `None` into 200 SUCCESS, a dict into JSON."""

    @functools.wraps(fn)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            result = await fn(request)
        except (Failure, Ongoing) as e:
            return dtm_response(e)
        if result is None:
            return dtm_response(None)
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(dict(result))

    return wrapper


@web.middleware
async def dtm_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer `Failure` and `Ongoing` raised by any handler with 409 / 425."""
    try:
        return await handler(request)
    except (Failure, Ongoing) as e:
        return dtm_response(e)


def xa_handler(
    client: DtmClient, connect: Connect, busi: XaBusiness, *, table: str = DEFAULT_TABLE
) -> Handler:
    """A handler serving one XA branch: op "action" runs `await busi(conn, payload)` in an
    XA transaction on a connection from `connect()` and prepares it; "commit" and
    "rollback" finish it (see `dtmx.client.xa_local_transaction`); `table` is the barrier
    table. Answers 200/409/425/500
    as `result_for` does, and 400 to a call that is not an XA branch call.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        status, body = await serve_xa(
            client, request.query, await request.read(), connect, busi, table=table
        )
        return web.json_response(body, status=status)

    return handler
