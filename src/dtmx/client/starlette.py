"""Branch endpoints in Starlette or FastAPI. Starlette is imported only when used.

    @app.post("/TransOut")
    @dtm_endpoint
    async def trans_out(request: Request) -> None:
        info = branch_info(request)          # gid, trans_type, branch_id, op
        ...                                  # raise Failure to roll back

Or install handlers once with `install(app)` and raise `Failure` / `Ongoing` anywhere.

An XA branch (both of its phases, at one URL) is one line:

    app.add_route("/TransOutXa", xa_endpoint(client, pool.acquire, trans_out), ["POST"])
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec

from dtmx.client._branch import BranchInfo, result_for
from dtmx.client._errors import Failure, Ongoing
from dtmx.client._xa_local import Connect, XaBusiness, serve_xa
from dtmx.client.barrier._sql import DEFAULT_TABLE

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from dtmx.client._client import DtmClient

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


def xa_endpoint(
    client: DtmClient, connect: Connect, busi: XaBusiness, *, table: str = DEFAULT_TABLE
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint serving one XA branch: op "action" runs `await busi(conn, payload)` in
    an XA transaction on a connection from `connect()` and prepares it; "commit" and
    "rollback" finish it (see `dtmx.client.xa_local_transaction`); `table` is the barrier
    table. Answers 200/409/425/500
    as `result_for` does, and 400 to a call that is not an XA branch call.
    """
    from starlette.responses import JSONResponse

    async def endpoint(request: Request) -> Response:
        status, body = await serve_xa(
            client, request.query_params, await request.body(), connect, busi, table=table
        )
        return JSONResponse(body, status_code=status)

    return endpoint
