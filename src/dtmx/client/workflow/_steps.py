"""`Branch`: the steps a workflow branch can take (local code, calls, TCC)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from dtmx.client._base import Payload, payload_text
from dtmx.client._consts import Op, Status
from dtmx.client._errors import DtmError
from dtmx.client._http import BranchResponse
from dtmx.client.barrier import BranchBarrier
from dtmx.client.workflow._outcome import (
    LocalStep,
    Outcome,
    Phase2,
    maybe_await,
    name_of,
    outcome_of_error,
    path_of,
)
from dtmx.client.workflow._record import to_bytes
from dtmx.client.workflow._xa_step import Connect, XaWork, xa_step

if TYPE_CHECKING:
    from dtmx.client.workflow._workflow import Workflow



class Branch:
    """One branch of a workflow: optional commit/rollback callbacks, then its action.

    Callbacks are registered before the action runs, as in DTM, so a rollback registered
    for a branch whose action then fails is dropped (unless `compensate_error_branch`).
    """

    def __init__(self, wf: Workflow, branch_id: str) -> None:
        self.wf = wf
        #: This branch's id.
        self.branch_id = branch_id

    def _check_current(self) -> None:
        if self.wf.branch_id != self.branch_id:
            raise DtmError(f"branch {self.branch_id} is no longer the current branch")

    def on_commit(self, fn: Phase2) -> Branch:
        """Call `fn(barrier)` when the workflow succeeds (TCC confirm, XA commit...)."""
        self._check_current()
        self.wf._add_phase2(Op.COMMIT, fn)
        return self

    def on_rollback(self, fn: Phase2) -> Branch:
        """Call `fn(barrier)` when the workflow fails (saga compensation, TCC cancel...)."""
        self._check_current()
        self.wf._add_phase2(Op.ROLLBACK, fn)
        return self

    def on_finish(self, fn: Callable[[BranchBarrier, bool], Awaitable[None] | None]) -> Branch:
        """Call `fn(barrier, is_rollback)` at the end either way."""

        async def commit(bb: BranchBarrier) -> None:
            await maybe_await(fn(bb, False))

        async def rollback(bb: BranchBarrier) -> None:
            await maybe_await(fn(bb, True))

        commit.__qualname__ = rollback.__qualname__ = name_of(fn)
        return self.on_commit(commit).on_rollback(rollback)

    async def do(self, fn: LocalStep, *, name: str | None = None) -> bytes:
        """Run local code as this branch's action: `fn(barrier)` returns the result (bytes,
        str, JSON-able or None), recorded and returned as bytes (on replay too).

        Raise `Failure` in `fn` to roll the workflow back, anything else to stop it and
        run it again later. Guard database writes with ``await barrier.call(conn, ...)``:
        a crash between the commit and the record runs `fn` again.
        """
        self._check_current()

        async def run(bb: BranchBarrier) -> Outcome:
            try:
                return Outcome(Status.SUCCEED, to_bytes(await maybe_await(fn(bb))))
            except Exception as e:  # mapped to the step's outcome
                return outcome_of_error(e)

        return await self.wf.run_step(f"local {name or name_of(fn)}", run)

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Payload = None,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> BranchResponse:
        """This branch's action is a call: see `Workflow.request`."""
        self._check_current()
        return await self.wf.request(method, url, json=json, data=data, headers=headers)

    async def post(self, url: str, json: Payload = None) -> BranchResponse:
        """`request("POST", url, json=json)`."""
        return await self.request("POST", url, json=json)

    async def grpc(self, url: str, request: Any, reply_type: Any = None) -> Any:
        """This branch's action is a gRPC call to ``host:port/pkg.Service/Method``:
        `request` is a protobuf message (or its bytes); the reply is parsed with
        `reply_type.FromString` when given, else returned as bytes."""
        resp = await self.request("POST", url, data=to_bytes(request))
        return reply_type.FromString(resp.body) if reply_type is not None else resp.body

    async def xa(self, connect: Connect, work: XaWork, *, name: str | None = None) -> bytes:
        """An XA branch: `work(conn)` runs inside an XA transaction on a connection from
        `connect()` (asyncmy or asyncpg, autocommit), which is prepared as this branch's
        action and committed when the workflow succeeds, rolled back when it fails. The
        result is recorded as for `do`. MySQL/MariaDB or PostgreSQL (with
        max_prepared_transactions > 0)."""
        self._check_current()
        return await xa_step(self, connect, work, name)

    async def tcc(
        self, try_url: str, confirm_url: str, cancel_url: str, payload: Payload = None
    ) -> BranchResponse:
        """A TCC branch: confirm on commit, cancel on rollback, then call try (all POST
        with the same payload)."""
        body = payload if isinstance(payload, bytes) else payload_text(payload)
        wf = self.wf

        async def confirm(_: BranchBarrier) -> None:
            await wf.request("POST", confirm_url, data=body)

        async def cancel(_: BranchBarrier) -> None:
            await wf.request("POST", cancel_url, data=body)

        confirm.__qualname__ = f"confirm {path_of(confirm_url)}"
        cancel.__qualname__ = f"cancel {path_of(cancel_url)}"
        self.on_rollback(cancel).on_commit(confirm)
        return await self.request("POST", try_url, data=body)
