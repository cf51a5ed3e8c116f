"""Calling HTTP branches exactly as DTM does: the request DTM sends, its result rule.

The bytes travel through `dtmx.net.branch_client` (bounded answers, no redirects).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Coroutine
from typing import Any

from dtmx.core.local import is_local
from dtmx.core.models import Outcome
from dtmx.invoke import json_rpc
from dtmx.invoke.base import BranchCall, CallResult, Followup, Invoker
from dtmx.invoke.json_rpc import json_rpc_method
from dtmx.net.branch_client import Answer, BranchClient, HostGuard
from dtmx.net.branch_conn import Request
from dtmx.net.branch_wire import DEFAULT_MAX_RESPONSE, HeaderError, HttpProtocolError

log = logging.getLogger(__name__)

_DETAIL_MAX = 512


def classify(status: int, body: str) -> Outcome:
    """DTM's result rule: 425 or ONGOING; 409 or FAILURE; any other non-200 is an error."""
    if status == 425 or "ONGOING" in body:
        return Outcome.ONGOING
    if status == 409 or "FAILURE" in body:
        return Outcome.FAILURE
    if status != 200:
        return Outcome.ERROR
    return Outcome.SUCCESS


class HttpInvoker:
    """Invoker for http:// and https:// branch URLs.

    `limit` bounds open connections; `max_response` the bytes of one answer (as read and
    after decompression): a larger answer is an ERROR result and its connection is dropped.
    """

    def __init__(self, *, limit: int = 512, max_response: int = DEFAULT_MAX_RESPONSE,
                 guard: HostGuard | None = None, ssl_context: ssl.SSLContext | None = None
                 ) -> None:
        self.client = BranchClient(limit=limit, max_response=max_response, guard=guard,
                                   ssl_context=ssl_context)

    async def call(self, call: BranchCall) -> CallResult:
        """Call an HTTP branch as DTM does, its answer mapped to an outcome; "" succeeds.
        A call that went out already (`call.sent`, see Followup) is only awaited; the
        Followup a call carries (`call.then`) is sent as soon as this one succeeds, when
        both go to the same host through the keep-alive pool."""
        if call.sent is not None:
            return await call.sent
        if not call.url:  # DTM: an empty URL is a branch with nothing to do
            return CallResult(Outcome.SUCCESS)
        method = json_rpc_method(call.url) if call.json_rpc else ""
        if method:  # DTM: a json-rpc transaction's URL naming a method is called with JSON-RPC
            try:
                payload = json_rpc.request_body(call, method)
            except ValueError as e:
                return CallResult(Outcome.ERROR, str(e))
            post, query = True, dict[str, str]()
        else:
            payload, post, query = _plain(call)
        follow = _Ahead(self, call.then) if call.then is not None and not method else None
        try:
            status, raw = await self.client.request(
                call.url,
                post=post,
                query=query,
                headers=call.headers,
                body=payload,
                timeout=call.timeout,
                follow=follow,
            )
        except Exception as e:  # an invoker never raises: the engine retries with backoff
            return _error(call, e)
        return _answer(status, raw, method)

    async def _sent(self, call: BranchCall, exchange: Awaitable[Answer]) -> CallResult:
        """The result of `call`, sent as a Followup: `exchange` gives its answer."""
        try:
            status, raw = await exchange
        except Exception as e:
            return _error(call, e)
        return _answer(status, raw, "")

    async def close(self) -> None:
        """Close the pooled connections."""
        await self.client.close()


def _plain(call: BranchCall) -> tuple[bytes, bool, dict[str, str]]:
    """(body, POST?, query) of a plain (not JSON-RPC) call: DTM's request."""
    query = {
        "gid": call.gid,
        "trans_type": call.trans_type,
        "branch_id": call.branch_id,
        "op": call.op,
    }
    return call.payload, bool(call.payload) or call.force_post, query


def _error(call: BranchCall, e: Exception) -> CallResult:
    """The ERROR result of a call that raised `e` (called while handling it)."""
    if isinstance(e, TimeoutError):
        return CallResult(Outcome.ERROR, f"timeout after {call.timeout:g}s")
    if not isinstance(e, OSError | HttpProtocolError | HeaderError):
        log.exception("unexpected error calling %s", call.url)
    return CallResult(Outcome.ERROR, f"{type(e).__name__}: {e}")


def _answer(status: int, raw: bytes, method: str) -> CallResult:
    body = raw.decode("utf-8", "replace")
    outcome = classify(status, body)
    if method:
        return json_rpc.classify(outcome, status, raw)
    if outcome is Outcome.SUCCESS:
        return CallResult(outcome)
    return CallResult(outcome, f"{status} {body[:_DETAIL_MAX]}")


class _Ahead:
    """Sends a run's Followup from the pool's callback when the call it follows answers
    a plain HTTP success and the run says (`ready`) it would make that call next."""

    __slots__ = ("call", "followup", "invoker")

    def __init__(self, invoker: HttpInvoker, followup: Followup) -> None:
        self.invoker = invoker
        self.followup = followup
        self.call: BranchCall | None = None

    def next_request(self, status: int, body: bytes) -> Request | None:
        """The Followup's request, if the answer is a success (DTM's rule, as `classify`
        on the bytes) and the run is ready for it."""
        f = self.followup
        nxt = f.call
        if nxt is None or status != 200 or b"ONGOING" in body or b"FAILURE" in body \
                or not nxt.url or nxt.json_rpc or nxt.sent is not None:
            return None
        payload, post, query = _plain(nxt)
        then = _Ahead(self.invoker, nxt.then) if nxt.then is not None else None
        try:
            req = self.invoker.client.pooled(nxt.url, post=post, query=query,
                                             headers=nxt.headers, body=payload,
                                             timeout=nxt.timeout, follow=then)
        except HeaderError:  # the run's own call of it meets this and reports it
            return None
        if req is None or not f.ready():
            return None
        self.call = nxt
        return req

    def sent(self, exchange: Coroutine[Any, Any, Answer]) -> None:
        """Hand the run the result to come."""
        assert self.call is not None
        self.followup.sent = asyncio.ensure_future(self.invoker._sent(self.call, exchange))


class Router:
    """Chooses the invoker by URL: http(s):// to HTTP, local:// to this process's local
    functions (if it has any), anything else to gRPC (if present)."""

    def __init__(self, http: HttpInvoker, grpc: Invoker | None = None,
                 local: Invoker | None = None) -> None:
        self.http = http
        self.grpc = grpc
        self.local = local

    def call(self, call: BranchCall) -> Coroutine[Any, Any, CallResult]:
        """Call the branch with the invoker its URL scheme names (http(s) or gRPC); await
        the result."""
        # a plain function handing back the chosen invoker's coroutine: no frame of its own
        # to create and unwind on each branch call (the critical path of a long saga)
        if call.url.startswith(("http://", "https://")) or not call.url:
            return self.http.call(call)
        return self._other(call)

    async def _other(self, call: BranchCall) -> CallResult:
        if is_local(call.url):
            if self.local is None:  # the engine hands such a transaction back first
                return CallResult(Outcome.ERROR, f"no local functions here for {call.url}")
            return await self.local.call(call)
        if self.grpc is None:
            return CallResult(Outcome.ERROR, f"no gRPC invoker for {call.url}")
        return await self.grpc.call(call)

    async def close(self) -> None:
        """Close every invoker."""
        await self.http.close()
        if self.grpc is not None:
            await self.grpc.close()
        if self.local is not None:
            await self.local.close()
