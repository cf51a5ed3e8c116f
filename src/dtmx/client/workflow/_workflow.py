"""`Workflow`: one run (or replay) of a workflow function, and its branches' steps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dtmx.client._base import BranchIdGen, Payload, TransBase, payload_text
from dtmx.client._consts import Op, Status, TransType
from dtmx.client._errors import DtmError, Failure, error_for_response
from dtmx.client._http import BranchResponse
from dtmx.client.barrier import DEFAULT_TABLE, BranchBarrier
from dtmx.client.workflow._outcome import (
    Outcome,
    Phase2,
    maybe_await,
    name_of,
    outcome_of_error,
    path_of,
)
from dtmx.client.workflow._record import Recorded, WorkflowDiverged, encode
from dtmx.client.workflow._steps import Branch

if TYPE_CHECKING:
    from dtmx.client._client import DtmClient

#: The workflow running in this task, for the gRPC client interceptor.
current_workflow: ContextVar[Workflow | None] = ContextVar("dtmx_workflow", default=None)


class WorkflowTrans(TransBase):
    """The workflow as a DTM transaction (body of prepareWorkflow, branch headers)."""

    trans_type = TransType.WORKFLOW

    def __init__(self, client: DtmClient, gid: str, custom: str, callback: str) -> None:
        super().__init__(client, gid)
        self._custom = custom
        self.query_prepared = callback

    def custom_data(self) -> str:
        """`{"name":..., "data": <base64 input>}`."""
        return self._custom

    def to_body(self) -> dict[str, Any]:
        """The TransBase JSON prepareWorkflow takes."""
        body = super().to_body()
        body["query_prepared"] = self.query_prepared
        return body


@dataclass(frozen=True, slots=True)
class _Phase2Item:
    branch_id: str
    step: str
    fn: Phase2


class Workflow:
    """One run of a registered workflow: start branches with `new_branch()`.

    Every step (a local function, an HTTP or gRPC call, a TCC try) is recorded on the
    server under its branch id; when the workflow is run again (after a crash, an
    `Ongoing`, or the server's resume), recorded steps return their recorded result instead
    of running again. Steps must therefore be reached in the same order on every run.
    """

    def __init__(
        self,
        client: DtmClient,
        trans: WorkflowTrans,
        name: str,
        data: bytes,
        steps: Mapping[tuple[str, str], Recorded],
        *,
        compensate_error_branch: bool = False,
        barrier_table: str = DEFAULT_TABLE,
    ) -> None:
        self.client = client
        #: The workflow's name, gid and input.
        self.name = name
        self.gid = trans.gid
        self.data = data
        self.trans = trans
        #: Roll back a branch whose own action failed too (DTM's CompensateErrorBranch).
        self.compensate_error_branch = compensate_error_branch
        self.barrier_table = barrier_table
        self._steps = steps
        self._ids = BranchIdGen()
        self._branch = ""
        self._op = Op.ACTION
        self._action_done = False
        self._reached: set[str] = set()
        self._commits: list[_Phase2Item] = []
        self._rollbacks: list[_Phase2Item] = []

    @property
    def branch_id(self) -> str:
        """The current branch's id ("" before the first `new_branch()`)."""
        return self._branch

    @property
    def op(self) -> Op:
        """action while the workflow runs; commit or rollback inside phase-2 callbacks."""
        return self._op

    def new_branch(self) -> Branch:
        """Start the next branch (ids "01", "02", ... as DTM's)."""
        if self._op is not Op.ACTION:
            raise DtmError("new_branch() cannot be called inside a commit/rollback callback")
        self._branch = self._ids.new_id()
        self._action_done = False
        return Branch(self, self._branch)

    def barrier(self) -> BranchBarrier:
        """The barrier of the current branch and op (what the server's calls would carry)."""
        if not self._branch:
            raise DtmError("no branch yet: call wf.new_branch() first")
        return BranchBarrier(TransType.WORKFLOW.value, self.gid, self._branch, self._op.value,
                             table=self.barrier_table)

    # --- recording --------------------------------------------------------------------

    async def _recorded(
        self, step: str, run: Callable[[BranchBarrier], Awaitable[Outcome]]
    ) -> Outcome:
        """Replay the recorded outcome of the current branch and op, or run and record it."""
        bb = self.barrier()
        if self._op is Op.ACTION:
            if self._action_done:
                raise DtmError(
                    f"branch {self._branch} already has its action ({step!r} is a second "
                    "one): call wf.new_branch() before each step"
                )
            self._action_done = True
            self._reached.add(self._branch)
        rec = self._steps.get((self._branch, self._op.value))
        if rec is not None:
            if rec.step is not None and rec.step != step:
                raise WorkflowDiverged(
                    f"workflow {self.name!r} ({self.gid}) diverged at branch {self._branch} "
                    f"{self._op.value}: recorded {rec.step!r}, this run reached {step!r}",
                    branch_id=self._branch,
                    op=self._op.value,
                )
            if rec.status is Status.FAILED:
                return Outcome(rec.status, rec.data, Failure(rec.data.decode(errors="replace")))
            return Outcome(rec.status, rec.data)
        out = await run(bb)
        if out.status is not None:
            await self._register(out.status, encode(step, out.data))
        return out

    async def _register(self, status: Status, data: str) -> None:
        body = {
            "gid": self.gid,
            "trans_type": TransType.WORKFLOW.value,
            "branch_id": self._branch,
            "op": self._op.value,
            "status": status.value,
            "data": data,
        }
        try:
            await self.client.transport.register_branch(body)
        except DtmError as e:
            # Not a Failure whatever the server said: the step's outcome is not known to
            # the server, so the workflow must not roll back on it; a resume decides.
            raise DtmError(
                f"recording branch {self._branch} {self._op.value} of {self.gid}: {e.message}"
            ) from e

    def _after_action(self, out: Outcome) -> None:
        # DTM's rule: a branch whose own action failed is not rolled back, unless asked.
        failed = out.status is Status.FAILED and not self.compensate_error_branch
        if failed and self._rollbacks and self._rollbacks[-1].branch_id == self._branch:
            self._rollbacks.pop()

    async def run_step(
        self, step: str, run: Callable[[BranchBarrier], Awaitable[Outcome]]
    ) -> bytes:
        """Run (or replay) one recorded step of the current branch; raise its error."""
        out = await self._recorded(step, run)
        if self._op is Op.ACTION:
            self._after_action(out)
        if out.error is not None:
            raise out.error
        return out.data

    # --- calls ------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        url: str,
        data: str | bytes | None,
        headers: Mapping[str, str] | None,
    ) -> Outcome:
        try:
            resp = await self.client.request_branch(
                method, url, self.trans, branch_id=self._branch, op=self._op, data=data,
                headers=headers,
            )
        except DtmError as e:  # gRPC branches raise their mapped status; HTTP: unreachable
            return outcome_of_error(e)
        # DTM's workflow judges an HTTP answer by its status only: 409, 425, other, 200.
        err = error_for_response(resp.status, resp.text, check_body=False)
        if err is not None:
            return outcome_of_error(err)
        return Outcome(Status.SUCCEED, resp.body)

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Payload = None,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> BranchResponse:
        """Call a branch (HTTP URL, or gRPC ``host:port/pkg.Service/Method``) with DTM's
        branch parameters (gid, trans_type, branch_id, op) so it can use the barrier.

        As the current branch's action, the call is recorded (a replay answers from the
        record); inside a commit/rollback callback it is a plain call (the callback as a
        whole is recorded). Raises `Failure` (409 / ABORTED), `Ongoing` (425 /
        FAILED_PRECONDITION) or `DtmError`; returns the 200 answer.
        """
        body = data if data is not None else (payload_text(json) if json is not None else None)
        if self._op is not Op.ACTION:
            out = await self._call(method, url, body, headers)
            if out.error is not None:
                raise out.error
            return BranchResponse(200, out.data)
        step = f"{'grpc' if '://' not in url else 'http'} {method} {path_of(url)}"

        async def run(_: BranchBarrier) -> Outcome:
            return await self._call(method, url, body, headers)

        return BranchResponse(200, await self.run_step(step, run))

    # --- phase 2 ----------------------------------------------------------------------

    def _add_phase2(self, op: Op, fn: Phase2) -> None:
        items = self._commits if op is Op.COMMIT else self._rollbacks
        if any(i.branch_id == self._branch for i in items):
            raise DtmError(f"branch {self._branch} already has a {op.value} callback")
        items.append(_Phase2Item(self._branch, f"{op.value} {name_of(fn)}", fn))

    async def finish(self, failure: Failure | None) -> None:
        """Run the commit callbacks (no failure) or the rollback ones, newest first."""
        self._op = Op.COMMIT if failure is None else Op.ROLLBACK
        items = self._commits if failure is None else self._rollbacks
        for item in reversed(items):
            self._branch = item.branch_id

            async def run(bb: BranchBarrier, fn: Phase2 = item.fn) -> Outcome:
                try:
                    await maybe_await(fn(bb))
                except Failure as e:
                    # A second phase must end in success; a Failure here is a bug.
                    return Outcome(None, b"", DtmError(
                        f"a {self._op.value} callback must not fail for good "
                        f"(branch {bb.branch_id}): {e.message}"
                    ))
                except Exception as e:  # any error: the resume retries it
                    return Outcome(None, b"", e)
                return Outcome(Status.SUCCEED)

            await self.run_step(item.step, run)

    def check_all_reached(self) -> None:
        """Raise `WorkflowDiverged` if a recorded action was not reached by this run."""
        for branch_id, op in sorted(self._steps):
            if op == Op.ACTION.value and branch_id not in self._reached:
                rec = self._steps[(branch_id, op)]
                raise WorkflowDiverged(
                    f"workflow {self.name!r} ({self.gid}) diverged: it finished without "
                    f"reaching branch {branch_id} ({rec.step or 'unnamed step'}), "
                    "which an earlier run recorded",
                    branch_id=branch_id,
                    op=op,
                )
