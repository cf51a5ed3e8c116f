"""DTM's JSON-RPC API: `POST /api/json-rpc`, thin over the same `Service` as the HTTP routes.

Methods are DTM's: newGid, prepare, submit, abort, registerBranch, with the same JSON bodies
as `params` and the same checks (`dtmx.core.request`) and limits as HTTP. Errors follow
DTM's codes: -32700 unparsable JSON, -32600 not a JSON-RPC 2.0 request with an id, -32601
unknown method, -32901 the FAILURE of a verb (e.g. submit of a transaction already failed),
-32603 any other error; a bad `params` is -32602 with the same message HTTP gives with its
400 (DTM answers -32603 there). Every answer is HTTP 200 (DTM's too), except a refused token:
the route is guarded like the HTTP ones (role `client`), so 401 / 403.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from dtmx.core.request import Verb, parse_registration
from dtmx.errors import BadRequest, DtmxError, log_error
from dtmx.net.api_server import Request, Response
from dtmx.wire import DtmResult

log = logging.getLogger("dtmx.jsonrpc")

PATH = "/api/json-rpc"
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: DTM's code for a FAILURE result (dtmimp.JrpcCodeFailure)
CODE_FAILURE = -32901
_SUCCESS = {"dtm_result": DtmResult.SUCCESS.value}

Method = Callable[[Any], Awaitable[Any]]


class RpcError(Exception):
    """An error answered as a JSON-RPC error object."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _answer(rid: Any, *, result: Any = None, error: RpcError | None = None) -> Response:
    out: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
    if error is None:
        out["result"] = result
    else:
        out["error"] = {"code": error.code, "message": error.message}
    return Response(orjson.dumps(out))


def _params_object(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise BadRequest("params must be a JSON object (the body of the same HTTP call)")
    return params


class JsonRpcApi:
    """The JSON-RPC route over the HTTP API's service, checks and limits (`HttpApi`)."""

    def __init__(self, api: Any) -> None:
        # `api` is the HttpApi: its service, its limits and its body checks, used as they are
        self.api = api
        self.methods: dict[str, Method] = {
            "newGid": self._new_gid,
            "prepare": self._verb(Verb.PREPARE, "prepare"),
            "submit": self._verb(Verb.SUBMIT, "submit"),
            "abort": self._verb(Verb.ABORT, "abort"),
            "registerBranch": self._register_branch,
        }

    async def _new_gid(self, params: Any) -> Any:
        return {"gid": await self.api.svc.new_gid(), **_SUCCESS}

    def _verb(self, verb: Verb, name: str) -> Method:
        async def call(params: Any) -> Any:
            req = self.api._trans(_params_object(params), verb)
            await getattr(self.api.svc, name)(req)
            return _SUCCESS

        return call

    async def _register_branch(self, params: Any) -> Any:
        await self.api.svc.register_branch(parse_registration(_params_object(params)))
        return _SUCCESS

    async def handle(self, r: Request) -> Response:
        """Answer one JSON-RPC request (batches are not supported, as in DTM)."""
        try:
            req = orjson.loads(r.body)
        except orjson.JSONDecodeError as e:
            return _answer(None, error=RpcError(PARSE_ERROR, f"Parse error: {e}"))
        rid = req.get("id") if isinstance(req, dict) else None
        try:
            method = self._method_of(req)
            return _answer(rid, result=await method(req.get("params")))
        except RpcError as e:
            return _answer(rid, error=e)
        except BadRequest as e:
            return _answer(rid, error=RpcError(INVALID_PARAMS, f"Invalid params: {e.message}"))
        except DtmxError as e:
            failed = e.dtm_result is DtmResult.FAILURE
            log_error(log, e, "json-rpc %s %s", req.get("method"), e.message)
            return _answer(rid, error=RpcError(CODE_FAILURE if failed else INTERNAL_ERROR,
                                               e.message))
        except Exception as e:
            log.error("json-rpc %s failed", req.get("method"), exc_info=e)
            return _answer(rid, error=RpcError(INTERNAL_ERROR, "internal server error"))

    def _method_of(self, req: Any) -> Method:
        if not isinstance(req, dict):
            raise RpcError(INVALID_REQUEST, "Invalid Request: expected a JSON object")
        rid = req.get("id")
        if req.get("jsonrpc") != "2.0" or rid in (None, "") or not isinstance(rid, str | int):
            raise RpcError(INVALID_REQUEST, "Invalid Request: needs jsonrpc \"2.0\" and an id "
                           "(a string or number; notifications are not supported)")
        name = req.get("method")
        method = self.methods.get(name) if isinstance(name, str) else None
        if method is None:
            known = ", ".join(self.methods)
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {name!r} (known: {known})")
        return method
