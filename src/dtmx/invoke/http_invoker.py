"""Calling HTTP branches exactly as DTM does: the request DTM sends, its result rule.

The bytes travel through `dtmx.net.branch_client` (bounded answers, no redirects).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Coroutine
from typing import Any

from dtmx.core.local import is_local
from dtmx.core.models import Outcome
from dtmx.invoke import json_rpc
from dtmx.invoke.base import BranchCall, CallResult, Invoker
from dtmx.invoke.json_rpc import json_rpc_method
from dtmx.net.branch_client import BranchClient, HostGuard
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
        """Call an HTTP branch as DTM does, its answer mapped to an outcome; "" succeeds."""
        if not call.url:  # DTM: an empty URL is a branch with nothing to do
            return CallResult(Outcome.SUCCESS)
        method = json_rpc_method(call.url) if call.json_rpc else ""
        if method:  # DTM: a json-rpc transaction's URL naming a method is called with JSON-RPC
            try:
                payload = json_rpc.request_body(call, method)
            except ValueError as e:
                return CallResult(Outcome.ERROR, str(e))
            post, query = True, {}
        else:
            payload, post = call.payload, bool(call.payload) or call.force_post
            query = {
                "gid": call.gid,
                "trans_type": call.trans_type,
                "branch_id": call.branch_id,
                "op": call.op,
            }
        try:
            status, raw = await self.client.request(
                call.url,
                post=post,
                query=query,
                headers=call.headers,
                body=payload,
                timeout=call.timeout,
            )
        except TimeoutError:
            return CallResult(Outcome.ERROR, f"timeout after {call.timeout:g}s")
        except (OSError, HttpProtocolError, HeaderError) as e:
            return CallResult(Outcome.ERROR, f"{type(e).__name__}: {e}")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # an invoker never raises: the engine retries with backoff
            log.exception("unexpected error calling %s", call.url)
            return CallResult(Outcome.ERROR, f"{type(e).__name__}: {e}")
        body = raw.decode("utf-8", "replace")
        outcome = classify(status, body)
        if method:
            return json_rpc.classify(outcome, status, raw)
        if outcome is Outcome.SUCCESS:
            return CallResult(outcome)
        return CallResult(outcome, f"{status} {body[:_DETAIL_MAX]}")

    async def close(self) -> None:
        """Close the pooled connections."""
        await self.client.close()


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
