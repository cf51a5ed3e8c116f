"""How the SDK talks to the DTM server, independent of HTTP or gRPC.

Transaction bodies are plain dicts in DTM's JSON shape (`gid`, `trans_type`, `steps`,
`payloads`, `custom_data`, options...), so each transport only has to carry them.
Implementations: `dtmx.client._http.HttpTransport` and, separately, a gRPC one.
Every method raises `dtmx.client._errors.DtmError` (or its `Failure` / `Ongoing`) on error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dtmx.wire import Op

if TYPE_CHECKING:
    from dtmx.client._http import BranchResponse


@runtime_checkable
class Transport(Protocol):
    """The calls a client makes to the DTM server."""

    async def new_gid(self) -> str:
        """A fresh global transaction id from the server."""
        ...

    async def prepare(self, body: Mapping[str, Any]) -> None:
        """Store the transaction as prepared (msg, tcc, xa)."""
        ...

    async def submit(self, body: Mapping[str, Any]) -> None:
        """Submit the transaction; with `wait_result` the server answers when it is done."""
        ...

    async def abort(self, body: Mapping[str, Any]) -> None:
        """Abort a prepared transaction."""
        ...

    async def register_branch(self, body: Mapping[str, str]) -> None:
        """Register a branch (tcc: data, confirm, cancel) with a prepared transaction."""
        ...

    async def query(self, gid: str) -> dict[str, Any]:
        """`{"transaction": ... or None, "branches": [...]}` for `gid`."""
        ...

    async def close(self) -> None:
        """Release connections; the transport may be used again afterwards."""
        ...


@runtime_checkable
class WorkflowTransport(Transport, Protocol):
    """A transport that can also run workflows (HTTP and gRPC do)."""

    async def prepare_workflow(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store a workflow as prepared (or find it): ``{"transaction": ..., "progresses": [...]}``
        with each progress's `bin_data` as base64 text."""
        ...


@runtime_checkable
class LocalBranches(Protocol):
    """A transport that can also call `local://` branches itself (the embedded engine's):
    the client's own branch calls (a TCC's try) to local functions go through it."""

    async def call_local(self, url: str, *, gid: str, trans_type: str, branch_id: str,
                         op: Op, data: str | bytes | None,
                         headers: Mapping[str, str]) -> BranchResponse:
        """Call the local function `url` names; its answer as an HTTP branch's would be."""
        ...
