"""The branch HTTP client: one request, one answer, bounded, never redirected.

Plain http:// URLs go through our keep-alive pool (`branch_pool.Http1Pool`), several times
cheaper per call than aiohttp (bench/REPORT.md); https:// and URLs with user info use one
pooled aiohttp session. Both paths keep the same rules:

- the answer is read up to `max_response` bytes, counted as read and after gzip/deflate
  decoding (`branch_wire.BodyDecoder`); beyond it the call fails with `ResponseTooLarge`
  and its connection is dropped, not reused (on the aiohttp path, unless aiohttp had
  already received the whole answer, e.g. a small gzip bomb: that connection is clean,
  and aiohttp put it back in its pool before the decoder saw the answer);
- redirects are never followed (a 3xx is the branch's answer, and so Basic credentials
  from the URL never travel to another host);
- errors are `TimeoutError`, `OSError` (connect errors, resets), `HttpProtocolError` or
  `HeaderError` (a branch header that cannot be sent), nothing else.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from dtmx.core.branch_policy import literal_ip
from dtmx.net.branch_conn import FollowOn, Request
from dtmx.net.branch_pool import Http1Pool, PoolStats
from dtmx.net.branch_wire import (
    DEFAULT_MAX_RESPONSE,
    BodyDecoder,
    HeaderError,
    HttpProtocolError,
    Target,
    build_head,
    encode_query,
    header_lines,
    parse_target,
)

# parsed targets of branch URLs; a service has few distinct URLs, so this stays small
_TARGETS_MAX = 4096
_NOT_OURS = object()
_READ_PIECE = 64 * 1024


#: a branch's answer: its status and its (decoded) body
Answer = tuple[int, bytes]


class HostGuard(Protocol):
    """Where branch hosts may be dialled (dtmx.security.netguard.AddressGuard)."""

    async def resolve(self, host: str, port: int, *, url: str = "") -> list[str]:
        """The addresses of `host` the branch policy allows; raises if there is none."""

    def aiohttp_resolver(self) -> Any:
        """An aiohttp resolver that applies the same checks on every connect."""


class BranchClient:
    """HTTP requests to branch URLs (see the module docstring for the rules). With a
    `guard`, every connection goes to an address the guard resolved and allowed."""

    def __init__(self, *, limit: int = 512, max_response: int = DEFAULT_MAX_RESPONSE,
                 guard: HostGuard | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._limit = limit
        #: verifies https:// branches (None: the system's CAs); never switched off
        self._ssl = ssl_context
        self.max_response = max_response
        self.guard = guard
        self.pool = Http1Pool(limit=limit, max_response=max_response,
                              resolve=guard.resolve if guard else None)
        self._session: aiohttp.ClientSession | None = None
        self._targets: dict[str, object] = {}

    def stats(self) -> PoolStats:
        """The keep-alive pool's connections (the aiohttp path keeps its own)."""
        return self.pool.stats()

    def request(
        self,
        url: str,
        *,
        post: bool,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        timeout: float,
        follow: FollowOn | None = None,
    ) -> Coroutine[Any, Any, Answer]:
        """POST `body` (or GET when `post` is false) to `url` with `query` appended; await
        the result for the answer. A header that cannot be sent may raise `HeaderError`
        already on the call, before any await. `follow`: see `Http1Pool.request` (the
        aiohttp path ignores it)."""
        # a plain function handing back the pool's coroutine: no coroutine frame of its own
        # to create and unwind on each branch call (the critical path of a long saga)
        req = self.pooled(url, post=post, query=query, headers=headers, body=body,
                          timeout=timeout, follow=follow)
        if req is None:
            return self._aiohttp(url, post, query, headers, body, timeout)
        return self.pool.request(*req)

    def pooled(self, url: str, *, post: bool, query: Mapping[str, str],
               headers: Mapping[str, str], body: bytes, timeout: float,
               follow: FollowOn | None = None) -> Request | None:
        """The request `request` sends through the keep-alive pool for these arguments,
        or None for a URL that goes the aiohttp way. May raise `HeaderError`."""
        target = self._target(url)
        if target is None:
            return None
        head = build_head(
            b"POST" if post else b"GET",
            target,
            encode_query(query),
            header_lines(headers),
            len(body) if post else None,
        )
        return target, head, body if post else None, timeout, follow

    def _target(self, url: str) -> Target | None:
        t = self._targets.get(url)
        if t is None:
            if len(self._targets) >= _TARGETS_MAX:
                self._targets.clear()
            t = self._targets[url] = parse_target(url) or _NOT_OURS
        return t if isinstance(t, Target) else None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            resolver = self.guard.aiohttp_resolver() if self.guard else None
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30,
                                             resolver=resolver, ssl=self._ssl or True)
            # decoding is ours (BodyDecoder), so the cap holds after decompression too
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    async def _aiohttp(
        self,
        url: str,
        post: bool,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        timeout: float,
    ) -> Answer:
        header_lines(headers)  # the same refusal of CR/LF and bad names as the own path
        if self.guard is not None:  # aiohttp does not ask its resolver about literals
            try:
                u = urlsplit(url)
                host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
            except ValueError as e:
                raise HttpProtocolError(f"bad URL: {e}") from None
            if literal_ip(host) is not None:
                await self.guard.resolve(host, port, url=url)
        sent = {"Content-Type": "application/json", **headers}
        try:
            async with self._get_session().request(
                "POST" if post else "GET",
                url,
                params=dict(query),
                data=body if post else None,
                headers=sent,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                decoder = BodyDecoder(
                    resp.headers.get("Content-Encoding", "").encode("latin-1", "replace"),
                    self.max_response,
                )
                try:
                    async for piece in resp.content.iter_chunked(_READ_PIECE):
                        decoder.add(piece)
                    data = decoder.finish()
                except HttpProtocolError:
                    resp.close()  # drop the connection if the rest of the answer is unread
                    raise
                return resp.status, data
        except (TimeoutError, OSError, HttpProtocolError, HeaderError, asyncio.CancelledError):
            raise
        except aiohttp.ClientError as e:
            raise HttpProtocolError(f"{type(e).__name__}: {e}") from None
        except ValueError as e:  # aiohttp refuses some URLs this way
            raise HttpProtocolError(f"bad URL: {e}") from None

    async def close(self) -> None:
        """Close idle connections of both paths."""
        await self.pool.close()
        if self._session is not None:
            await self._session.close()
