"""`DtmClient`: the entry point of the SDK, one per DTM server and application."""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING

from dtmx.client._consts import Op
from dtmx.client._errors import DtmError
from dtmx.client._http import BranchResponse, HttpSession, HttpTransport
from dtmx.client._msg import Msg
from dtmx.client._saga import Saga
from dtmx.client._state import TransactionState
from dtmx.client._tcc import Tcc
from dtmx.client._transport import LocalBranches, Transport
from dtmx.client._xa import Xa

if TYPE_CHECKING:
    from dtmx.client._base import TransBase
    from dtmx.client.grpc import GrpcBranchCaller

_HTTP_SCHEMES = ("http://", "https://")
_LOCAL_SCHEME = "local://"


class DtmClient:
    """A client of one DTM server.

    `server` is DTM's HTTP base URL, e.g. ``http://127.0.0.1:36789/api/dtmsvr``. To talk to
    the server over gRPC instead, pass only ``transport=GrpcTransport("host:36790")``
    (`dtmx.client.grpc`).

    `headers` go with every call to the server, and `token` adds
    ``Authorization: Bearer <token>`` (for a server that requires API tokens); neither is
    sent to branches. `ssl` is for HTTPS: an `ssl.SSLContext` (your CA, a client
    certificate) or False to skip certificate checks. `timeout` bounds each call, in
    seconds.

    Branch calls the client makes itself (a TCC try, a msg's query_prepared) go over HTTP
    for ``http(s)://`` URLs and over gRPC for ``host:port/pkg.Service/Method`` URLs;
    ``local://`` URLs only through the embedded engine's transport (`dtmx.embedded`).

    Use it as ``async with DtmClient(url) as client:`` or call `aclose()` at shutdown.
    """

    def __init__(
        self,
        server: str = "",
        *,
        transport: Transport | None = None,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
    ) -> None:
        if not server and transport is None:
            raise ValueError("give the server's HTTP URL, or a transport (GrpcTransport)")
        self.server = server.rstrip("/")
        #: Session for branch calls: never carries the server's headers or token.
        self.http = HttpSession(timeout=timeout, ssl=ssl)
        if transport is None:
            server_headers = dict(headers or {})
            if token:
                server_headers["Authorization"] = f"Bearer {token}"
            session = HttpSession(timeout=timeout, headers=server_headers, ssl=ssl)
            transport = HttpTransport(self.server, http=session)
        elif headers or token:
            raise ValueError("headers and token belong to the transport when you pass one")
        self.transport: Transport = transport
        self._grpc_branches: GrpcBranchCaller | None = None

    @property
    def dtm_address(self) -> str:
        """Where branches call the server back (the `dtm` query parameter)."""
        return self.server or str(getattr(self.transport, "server", ""))

    async def new_gid(self) -> str:
        """A fresh, unique global transaction id from the server."""
        return await self.transport.new_gid()

    def saga(self, gid: str) -> Saga:
        """A new `Saga` with this gid."""
        return Saga(self, gid)

    def tcc(self, gid: str) -> Tcc:
        """A new `Tcc` with this gid; use it as ``async with client.tcc(gid) as tcc:``."""
        return Tcc(self, gid)

    def xa(self, gid: str) -> Xa:
        """A new `Xa` with this gid; use it as ``async with client.xa(gid) as xa:``."""
        return Xa(self, gid)

    def msg(self, gid: str) -> Msg:
        """A new `Msg` with this gid."""
        return Msg(self, gid)

    async def query(self, gid: str) -> TransactionState | None:
        """The server's view of `gid`, or None if it has no such transaction.

        The JSON answer (``{"transaction": ..., "branches": [...]}``) is the result's `raw`.
        """
        return TransactionState.from_json(await self.transport.query(gid))

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
        params: Mapping[str, str] | None = None,
    ) -> BranchResponse:
        """Call a branch the way the server would: DTM query parameters (HTTP) or dtm-*
        metadata (gRPC), plus the transaction's branch headers.

        `params` are extra query parameters (an XA branch's `phase2_url`), HTTP only.
        The response is returned as it is; call `raise_for_result()` to map it. A gRPC
        branch's status is mapped already: it raises `Failure` / `Ongoing` / `DtmError`.
        """
        hdrs = {**trans.branch_headers, **(headers or {})}
        if url.startswith(_LOCAL_SCHEME):
            if not isinstance(self.transport, LocalBranches):
                raise DtmError(f"{url}: local branches need the embedded engine (dtmx.embedded)")
            return await self.transport.call_local(
                url, gid=trans.gid, trans_type=trans.trans_type.value, branch_id=branch_id,
                op=op, data=data, headers=hdrs)
        if not url.startswith(_HTTP_SCHEMES):
            return await self._grpc_branch_caller().call(
                url, trans, branch_id=branch_id, op=op, data=data, headers=hdrs
            )
        query = {
            "dtm": self.dtm_address,
            "gid": trans.gid,
            "trans_type": trans.trans_type.value,
            "branch_id": branch_id,
            "op": op.value,
            **(params or {}),
        }
        return await self.http.request(method, url, params=query, data=data, headers=hdrs)

    def _grpc_branch_caller(self) -> GrpcBranchCaller:
        if self._grpc_branches is None:
            from dtmx.client.grpc import GrpcBranchCaller  # needs the grpc extra

            self._grpc_branches = GrpcBranchCaller(
                dtm_address=self.dtm_address, timeout=self.http.timeout
            )
        return self._grpc_branches

    async def aclose(self) -> None:
        """Close connections (the client stays usable; it reconnects on demand)."""
        await self.transport.close()
        await self.http.close()
        if self._grpc_branches is not None:
            await self._grpc_branches.close()

    async def __aenter__(self) -> DtmClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
