"""Branch endpoints in Starlette or FastAPI. Starlette is imported only when used.

    @app.post("/TransOut")
    @dtm_endpoint
    async def trans_out(request: Request) -> None:
        info = branch_info(request)          # gid, trans_type, branch_id, op
        ...                                  # raise Failure to roll back

Or install handlers once with `install(app)` and raise `Failure` / `Ongoing` anywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec

from dtmx.client._branch import BranchInfo, result_for
from dtmx.client._errors import Failure, Ongoing

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

P = ParamSpec("P")


def branch_info(request: Request) -> BranchInfo:
    """The DTM branch parameters of `request` (raises `InvalidBranchInfo`)."""
    return BranchInfo.from_query(request.query_params)


def dtm_response(exc: BaseException | None = None) -> Response:
    """The JSON response a branch gives for its outcome (see `result_for`)."""
    from starlette.responses import JSONResponse

    status, body = result_for(exc)
    return JSONResponse(body, status_code=status)


def dtm_endpoint(fn: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[Any]]:
    """Turn `Failure`/`Ongoing` into 409/425 and a `None` result into 200 SUCCESS.

    Other return values pass through untouched, so FastAPI still serialises them. The
    wrapper keeps `fn`'s signature, so FastAPI's dependency injection sees its parameters.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        try:
            result = await fn(*args, **kwargs)
        except (Failure, Ongoing) as e:
            return dtm_response(e)
        return dtm_response(None) if result is None else result

    return wrapper


async def _handler(request: Request, exc: Exception) -> Response:
    return dtm_response(exc)


def install(app: Starlette) -> None:
    """Answer `Failure` and `Ongoing` raised by any endpoint of `app` with 409 / 425."""
    app.add_exception_handler(Failure, _handler)
    app.add_exception_handler(Ongoing, _handler)
