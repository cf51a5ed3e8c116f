"""TCC: the client prepares, registers and tries branches; the server confirms or cancels."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from dtmx.client._base import BranchIdGen, Payload, TransBase, payload_text
from dtmx.client._branch import BranchInfo
from dtmx.client._consts import Op, TransType
from dtmx.client._errors import DtmError
from dtmx.client._http import BranchResponse

if TYPE_CHECKING:
    from dtmx.client._client import DtmClient

T = TypeVar("T")
_MAX_REASON = 1024


class Tcc(TransBase):
    """A TCC transaction.

    >>> async with client.tcc(gid) as tcc:      # prepare
    ...     await tcc.call_branch(data, try_url, confirm_url, cancel_url)
    ... # normal exit: submit (confirm all); exception: abort (cancel all), re-raised

    A branch that itself calls further TCC branches uses `Tcc.from_branch` (or
    `from_query`): its sub-branches get ids under its own branch id.
    """

    trans_type = TransType.TCC

    def __init__(self, client: DtmClient, gid: str, *, branch_id: str = "") -> None:
        super().__init__(client, gid)
        self.ids = BranchIdGen(branch_id)

    @classmethod
    def from_branch(cls, client: DtmClient, gid: str, branch_id: str) -> Tcc:
        """Join transaction `gid` from inside branch `branch_id` (nested TCC)."""
        if not branch_id:
            raise ValueError("a nested Tcc needs its parent's branch_id")
        return cls(client, gid, branch_id=branch_id)

    @classmethod
    def from_query(cls, client: DtmClient, query: Mapping[str, str]) -> Tcc:
        """Join from the query parameters of the try call this branch is serving."""
        info = BranchInfo.from_query(query)
        return cls.from_branch(client, info.gid, info.branch_id)

    @property
    def nested(self) -> bool:
        """True for a Tcc joined from a branch: it does not own the global transaction."""
        return bool(self.ids.parent_id)

    async def prepare(self) -> None:
        """Create the global transaction as prepared."""
        await self.client.transport.prepare(self.to_body())

    async def submit(self) -> None:
        """Submit: the server confirms every registered branch."""
        await self._submit()

    async def abort(self, reason: str = "") -> None:
        """Abort: the server cancels every registered branch, in reverse order."""
        if reason:
            self.rollback_reason = reason[:_MAX_REASON]
        await self.client.transport.abort(self.to_body())

    async def call_branch(
        self, payload: Payload, try_url: str, confirm_url: str, cancel_url: str
    ) -> BranchResponse:
        """Register a branch, then call its try URL; raise `Failure`/`Ongoing`/`DtmError`.

        Returns the try response (status and body) on success.
        """
        data = payload_text(payload)
        branch_id = self.ids.new_id()
        await self.client.transport.register_branch(
            {
                "gid": self.gid,
                "trans_type": self.trans_type.value,
                "branch_id": branch_id,
                "data": data,
                Op.CONFIRM.value: confirm_url,
                Op.CANCEL.value: cancel_url,
            }
        )
        if not try_url:  # an empty URL is a branch with nothing to do
            return BranchResponse(200, b"")
        resp = await self.client.request_branch(
            "POST", try_url, self, branch_id=branch_id, op=Op.TRY, data=data
        )
        resp.raise_for_result()
        return resp

    async def __aenter__(self) -> Tcc:
        if self.nested:
            raise DtmError("a nested Tcc joins its parent's transaction; call call_branch only")
        await self.prepare()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.submit()
            return
        try:
            await self.abort(f"{type(exc).__name__}: {exc}")
        except DtmError as abort_err:
            # The original error matters more; the server's timeout cancels it anyway.
            exc.add_note(f"dtmx: abort of {self.gid} failed too: {abort_err}")


async def tcc_global_transaction(
    client: DtmClient, gid: str, fn: Callable[[Tcc], Awaitable[T] | T]
) -> T:
    """Run `fn(tcc)` inside a TCC: prepare, then submit, or abort and re-raise on error."""
    async with Tcc(client, gid) as tcc:
        result = fn(tcc)
        if inspect.isawaitable(result):
            result = await result
        return result
