"""TCC: the client prepares, registers and tries branches; the server confirms or cancels."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Self, TypeVar

from dtmx.client._base import BranchIdGen, Payload, payload_text
from dtmx.client._branch import BranchInfo
from dtmx.client._consts import Op, TransType
from dtmx.client._errors import DtmError
from dtmx.client._global import GlobalTrans, run_global
from dtmx.client._http import BranchResponse

if TYPE_CHECKING:
    from dtmx.client._client import DtmClient

T = TypeVar("T")


class Tcc(GlobalTrans):
    """A TCC transaction.

    >>> async with client.tcc(gid) as tcc:      # prepare
    ...     await tcc.call_branch(data, try_url, confirm_url, cancel_url)
    ... # normal exit: submit (confirm all); exception: abort (cancel all), re-raised

    On submit the server confirms every registered branch; on abort it cancels them, in
    reverse order.

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

    async def __aenter__(self) -> Self:
        if self.nested:
            raise DtmError("a nested Tcc joins its parent's transaction; call call_branch only")
        return await super().__aenter__()


async def tcc_global_transaction(
    client: DtmClient, gid: str, fn: Callable[[Tcc], Awaitable[T] | T]
) -> T:
    """Run `fn(tcc)` inside a TCC: prepare, then submit, or abort and re-raise on error."""
    return await run_global(Tcc(client, gid), fn)
