"""XA, the client side: the global transaction and its branch calls.

The client prepares an XA global transaction and calls each branch's URL with op "action";
the branch runs its local work as a database XA transaction, registers its second-phase URL
with the server and prepares (see `dtmx.client.xa_local_transaction`). Then the client
submits (the server calls every branch with op "commit") or aborts ("rollback").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from dtmx.client._base import BranchIdGen, Payload, payload_text
from dtmx.client._consts import Op, TransType
from dtmx.client._global import GlobalTrans, run_global
from dtmx.client._http import BranchResponse

if TYPE_CHECKING:
    from dtmx.client._client import DtmClient

T = TypeVar("T")
#: The query parameter that tells an XA branch where its second phase will be called.
PHASE2_URL = "phase2_url"


class Xa(GlobalTrans):
    """An XA global transaction.

    >>> async with client.xa(gid) as xa:     # prepare
    ...     await xa.call_branch(data, trans_out_url)
    ...     await xa.call_branch(data, trans_in_url)
    ... # normal exit: submit (commit all); exception: abort (roll back all), re-raised

    On submit the server calls every registered branch with op "commit"; on abort, with
    op "rollback".
    """

    trans_type = TransType.XA

    def __init__(self, client: DtmClient, gid: str) -> None:
        super().__init__(client, gid)
        self.ids = BranchIdGen()

    async def call_branch(self, payload: Payload, url: str) -> BranchResponse:
        """POST `payload` to the branch at `url` with op "action"; raise `Failure`/`Ongoing`/
        `DtmError` for its result. The branch's second phase is called at the same URL
        (DTM's `phase2_url`), which the branch registers itself once its work is prepared.
        """
        branch_id = self.ids.new_id()
        resp = await self.client.request_branch(
            "POST",
            url,
            self,
            branch_id=branch_id,
            op=Op.ACTION,
            data=payload_text(payload),
            params={PHASE2_URL: url},
        )
        resp.raise_for_result()
        return resp


async def xa_global_transaction(
    client: DtmClient, gid: str, fn: Callable[[Xa], Awaitable[T] | T]
) -> T:
    """Run `fn(xa)` inside an XA transaction: prepare, then submit, or abort and re-raise."""
    return await run_global(Xa(client, gid), fn)
