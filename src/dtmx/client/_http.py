"""HTTP plumbing: one pooled aiohttp session, branch responses, and the HTTP transport.

The session is created lazily inside the running loop (aiohttp binds a session to the loop
that created it) and reused for every call, so connections to the server and to branches are
kept alive. Transport errors (refused, timeout, ...) become `DtmError` / `TimedOut` here,
once, with a readable message (never a repr, never a header value).
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from dtmx.client._errors import DtmError, TimedOut, error_for_response, raise_for_response

_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class BranchResponse:
    """Status and raw body of an HTTP call to a branch (or to the server)."""

    status: int
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)

    def error(self) -> DtmError | None:
        """The `Failure` / `Ongoing` / `Rejected` / `DtmError` this response stands for."""
        return error_for_response(self.status, self.text)

    def raise_for_result(self, *, check_body: bool = True) -> None:
        """Raise `error()` if there is one (`check_body=False`: judge by the status only)."""
        raise_for_response(self.status, self.text, check_body=check_body)


class HttpSession:
    """A lazily created, pooled aiohttp session with DTM-friendly error translation.

    `headers` go with every call made through the session; `ssl` is passed to aiohttp as
    it is (an `ssl.SSLContext`, or False to skip certificate checks).
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        limit: int = 100,
        headers: Mapping[str, str] | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
    ) -> None:
        self.timeout = timeout
        self.limit = limit
        self.headers = dict(headers or {})
        self.ssl = ssl
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        """The shared session of the running loop, created on first use."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # A session from another (finished) loop cannot be used or closed from here.
            connector = aiohttp.TCPConnector(
                limit=self.limit, ssl=True if self.ssl is None else self.ssl
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
            self._loop = loop
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> BranchResponse:
        """Call `url` and return its status and body.

        Raises `TimedOut` when no answer came in time, `DtmError` when `url` cannot be
        reached.
        """
        hdrs = {**_JSON, **self.headers, **(headers or {})}
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self.session().request(
                method, url, params=params, data=data, headers=hdrs, **kwargs
            ) as resp:
                return BranchResponse(resp.status, await resp.read())
        except TimeoutError as e:
            limit = self.timeout if timeout is None else timeout
            raise TimedOut(f"{method} {url}: no answer within {limit:g} s") from e
        except aiohttp.ClientError as e:
            raise DtmError(f"{method} {url}: {_reason(e)}") from e

    async def close(self) -> None:
        """Close the session of the running loop, if any."""
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()


def _reason(e: aiohttp.ClientError) -> str:
    """A short, readable cause of a transport error."""
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"cannot connect ({e.os_error.strerror or type(e.os_error).__name__})"
    return str(e) or type(e).__name__


class HttpTransport:
    """The `Transport` over DTM's HTTP API (base URL like http://host:36789/api/dtmsvr)."""

    def __init__(self, server: str, *, http: HttpSession | None = None) -> None:
        self.server = server.rstrip("/")
        self.http = http or HttpSession()

    async def _call(
        self, method: str, op: str, *, check_body: bool = True, **kwargs: Any
    ) -> BranchResponse:
        resp = await self.http.request(method, f"{self.server}/{op}", **kwargs)
        resp.raise_for_result(check_body=check_body)
        return resp

    async def _post(self, op: str, body: Mapping[str, Any]) -> None:
        await self._call("POST", op, data=orjson.dumps(_text_payloads(body)))

    async def new_gid(self) -> str:
        """A fresh gid from GET newGid."""
        data = (await self._call("GET", "newGid", check_body=False)).json()
        gid = data.get("gid") if isinstance(data, dict) else None
        if not isinstance(gid, str) or not gid:
            raise DtmError("newGid returned no gid")
        return gid

    async def prepare(self, body: Mapping[str, Any]) -> None:
        """POST prepare."""
        await self._post("prepare", body)

    async def submit(self, body: Mapping[str, Any]) -> None:
        """POST submit."""
        await self._post("submit", body)

    async def abort(self, body: Mapping[str, Any]) -> None:
        """POST abort."""
        await self._post("abort", body)

    async def register_branch(self, body: Mapping[str, str]) -> None:
        """POST registerBranch."""
        await self._post("registerBranch", body)

    async def prepare_workflow(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST prepareWorkflow: the workflow's status and recorded progresses."""
        # The answer carries recorded step data: judge by status only.
        resp = await self._call(
            "POST", "prepareWorkflow", check_body=False, data=orjson.dumps(body)
        )
        data = resp.json()
        if not isinstance(data, dict):
            raise DtmError("prepareWorkflow answered something other than a JSON object")
        return data

    async def query(self, gid: str) -> dict[str, Any]:
        """GET query?gid=."""
        # The answer holds user data (rollback reasons, payloads): judge by status only.
        resp = await self._call("GET", "query", check_body=False, params={"gid": gid})
        data = resp.json()
        if not isinstance(data, dict):
            raise DtmError("query answered something other than a JSON object")
        return data

    async def close(self) -> None:
        """Close the underlying session."""
        await self.http.close()


def _text_payloads(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """DTM's HTTP API carries payloads as strings: bytes must be UTF-8 text to go this way."""
    payloads = body.get("payloads")
    if not payloads or not any(isinstance(p, bytes) for p in payloads):
        return body
    try:
        text = [p.decode() if isinstance(p, bytes) else p for p in payloads]
    except UnicodeDecodeError:
        raise DtmError(
            "a binary (non UTF-8) payload cannot travel over DTM's HTTP API; "
            "use the gRPC transport (dtmx.client.grpc.GrpcTransport)"
        ) from None
    return {**body, "payloads": text}
