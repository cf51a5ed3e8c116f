"""Calling HTTP branches exactly as DTM does, with one pooled keep-alive session."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall, CallResult, Invoker

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
    """Invoker for http:// and https:// branch URLs."""

    def __init__(self, *, limit: int = 512) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def call(self, call: BranchCall) -> CallResult:
        if not call.url:  # DTM: an empty URL is a branch with nothing to do
            return CallResult(Outcome.SUCCESS)
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
