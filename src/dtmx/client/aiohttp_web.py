"""Branch handlers in aiohttp.web: a decorator and a middleware.

    @dtm_handler
    async def trans_out(request: web.Request) -> None:
        info = branch_info(request)
        ...                                  # raise Failure to roll back
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from dtmx.client._branch import BranchInfo, result_for
from dtmx.client._errors import Failure, Ongoing

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
