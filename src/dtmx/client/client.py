"""`DtmClient`: the entry point of the SDK, one per DTM server and application."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from dtmx.client.consts import Op
from dtmx.client.http_transport import BranchResponse, HttpSession, HttpTransport
from dtmx.client.msg import Msg
from dtmx.client.saga import Saga
from dtmx.client.tcc import Tcc
from dtmx.client.transport import Transport

if TYPE_CHECKING:
    from dtmx.client.base import TransBase


class DtmClient:
    """A client of one DTM server, sharing one pooled HTTP session.

    `server` is DTM's HTTP base URL, e.g. ``http://127.0.0.1:36789/api/dtmsvr``. Pass
    `transport` to talk to the server another way (gRPC); branch calls made by the client
    itself (TCC try, msg query_prepared) always go over HTTP.

    Use it as ``async with DtmClient(url) as client:`` or call `aclose()` at shutdown.
    """

    def __init__(
        self,
        server: str,
        *,
        transport: Transport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.server = server.rstrip("/")
        self.http = HttpSession(timeout=timeout)
        self.transport: Transport = transport or HttpTransport(self.server, http=self.http)

    async def new_gid(self) -> str:
        """A fresh, unique global transaction id from the server."""
        return await self.transport.new_gid()

    def saga(self, gid: str) -> Saga:
        """A new `Saga` with this gid."""
        return Saga(self, gid)

    def tcc(self, gid: str) -> Tcc:
        """A new `Tcc` with this gid; use it as ``async with client.tcc(gid) as tcc:``."""
        return Tcc(self, gid)

    def msg(self, gid: str) -> Msg:
        """A new `Msg` with this gid."""
        return Msg(self, gid)

    async def query(self, gid: str) -> dict[str, Any]:
        """The server's view of `gid`: ``{"transaction": {...} or None, "branches": [...]}``."""
        return await self.transport.query(gid)

    async def request_branch(
        self,
        method: str,
        url: str,
        trans: TransBase,
        *,
        branch_id: str,
        op: Op,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> BranchResponse:
        """Call a branch URL the way the server would: DTM query parameters, branch headers.

        The response is returned as it is; call `raise_for_result()` to map it.
        """
        params = {
            "dtm": self.server,
            "gid": trans.gid,
            "trans_type": trans.trans_type.value,
            "branch_id": branch_id,
            "op": op.value,
        }
        hdrs = dict(trans.branch_headers)
        hdrs.update(headers or {})
        return await self.http.request(method, url, params=params, data=data, headers=hdrs)

    async def aclose(self) -> None:
        """Close connections (the client stays usable; it reconnects on demand)."""
        await self.transport.close()
        await self.http.close()

    async def __aenter__(self) -> DtmClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
