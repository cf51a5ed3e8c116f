"""Calling HTTP branches exactly as DTM does.

Plain http:// URLs go through our own keep-alive HTTP/1.1 client (http1.py), which is several
times cheaper per call than aiohttp; https:// and anything unusual (user info in the URL)
use one pooled aiohttp session.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall, CallResult, Invoker
from dtmx.invoke.http1 import Http1Client
from dtmx.invoke.http1_wire import (
    HeaderError,
    HttpProtocolError,
    Target,
    build_head,
    dtm_query,
    header_lines,
    parse_target,
)

log = logging.getLogger(__name__)

_DETAIL_MAX = 512
# parsed targets of branch URLs; a service has few distinct URLs, so this stays small
_TARGETS_MAX = 4096
_NOT_OURS = object()


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
    """Invoker for http:// and https:// branch URLs."""

    def __init__(self, *, limit: int = 512) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self.http1 = Http1Client(limit=limit)
        self._targets: dict[str, object] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _target(self, url: str) -> Target | None:
        t = self._targets.get(url)
        if t is None:
            if len(self._targets) >= _TARGETS_MAX:
                self._targets.clear()
            t = self._targets[url] = parse_target(url) or _NOT_OURS
        return t if isinstance(t, Target) else None

    async def call(self, call: BranchCall) -> CallResult:
        if not call.url:  # DTM: an empty URL is a branch with nothing to do
            return CallResult(Outcome.SUCCESS)
        target = self._target(call.url)
        if target is None:
            return await self._call_aiohttp(call)
        try:
            post = bool(call.payload) or call.force_post
            body_out = call.payload if post else None
            head = build_head(
                b"POST" if post else b"GET",
                target,
                dtm_query(call.gid, call.trans_type, call.branch_id, call.op),
                header_lines(call.headers),
                None if body_out is None else len(body_out),
            )
            status, raw = await self.http1.request(target, head, body_out, call.timeout)
            body = raw.decode("utf-8", "replace")
        except TimeoutError:
            return CallResult(Outcome.ERROR, f"timeout after {call.timeout:g}s")
        except (OSError, HttpProtocolError, HeaderError) as e:
            return CallResult(Outcome.ERROR, f"{type(e).__name__}: {e}")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # an invoker never raises: the engine retries with backoff
            log.exception("unexpected error calling %s", call.url)
            return CallResult(Outcome.ERROR, f"{type(e).__name__}: {e}")
        outcome = classify(status, body)
        if outcome is Outcome.SUCCESS:
            return CallResult(outcome)
        return CallResult(outcome, f"{status} {body[:_DETAIL_MAX]}")

    async def _call_aiohttp(self, call: BranchCall) -> CallResult:
        params = {
            "gid": call.gid,
            "trans_type": call.trans_type,
            "branch_id": call.branch_id,
            "op": call.op,
        }
        headers = {"Content-Type": "application/json", **call.headers}
        method = "POST" if call.payload or call.force_post else "GET"
        try:
            async with self._get_session().request(
                method,
                call.url,
                params=params,
                data=call.payload if method == "POST" else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=call.timeout),
            ) as resp:
                body = await resp.text(errors="replace")
                outcome = classify(resp.status, body)
                if outcome is Outcome.SUCCESS:
                    return CallResult(outcome)
                return CallResult(outcome, f"{resp.status} {body[:_DETAIL_MAX]}")
        except TimeoutError:
            return CallResult(Outcome.ERROR, f"timeout after {call.timeout:g}s")
        except (aiohttp.ClientError, OSError, ValueError) as e:
            return CallResult(Outcome.ERROR, f"{type(e).__name__}: {e}")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # an invoker never raises: the engine retries with backoff
            log.exception("unexpected error calling %s", call.url)
            return CallResult(Outcome.ERROR, f"{type(e).__name__}: {e}")

    async def close(self) -> None:
        await self.http1.close()
        if self._session is not None:
            await self._session.close()


class Router:
    """Chooses the invoker by URL: http(s):// to HTTP, anything else to gRPC (if present)."""

    def __init__(self, http: HttpInvoker, grpc: Invoker | None = None) -> None:
        self.http = http
        self.grpc = grpc

    async def call(self, call: BranchCall) -> CallResult:
        if call.url.startswith(("http://", "https://")) or not call.url:
            return await self.http.call(call)
        if self.grpc is None:
            return CallResult(Outcome.ERROR, f"no gRPC invoker for {call.url}")
        return await self.grpc.call(call)

    async def close(self) -> None:
        await self.http.close()
        if self.grpc is not None:
            await self.grpc.close()
