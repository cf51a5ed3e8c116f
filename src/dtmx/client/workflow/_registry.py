"""`Workflows`: register workflow functions by name, execute and resume them."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from dtmx.client._consts import Status, TransType
from dtmx.client._errors import DtmError, Failure, Ongoing, Rejected
from dtmx.client._transport import WorkflowTransport
from dtmx.client.barrier import DEFAULT_TABLE
from dtmx.client.workflow._outcome import name_of
from dtmx.client.workflow._record import custom_data, parse_progress, submit_extra, to_bytes
from dtmx.client.workflow._workflow import Workflow, WorkflowTrans, current_workflow

if TYPE_CHECKING:
    from dtmx.client._client import DtmClient

#: A workflow function: ``async def fn(wf, data: bytes) -> result`` (bytes, str, JSON-able,
#: a protobuf message or None).
WorkflowFn = Callable[[Workflow, bytes], Awaitable[Any]]
F = TypeVar("F", bound=WorkflowFn)

_MAX_REASON = 1024
_HTTP_SCHEMES = ("http://", "https://")


def require_async(name: str, fn: Callable[..., Any]) -> None:
    """Raise `TypeError` unless `fn` is an `async def` (or an object whose `__call__` is):
    a workflow function awaits its steps, in `execute` and in the resume endpoint alike."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    ):
        return
    raise TypeError(
        f"workflow {name!r}: {name_of(fn)} is not an async def; a workflow function is "
        "`async def fn(wf, data)`, also when blocking code executes it (docs/workflow.md)"
    )


class UnknownWorkflow(Rejected):
    """No workflow is registered under this name (the resume answers 404)."""


@dataclass(slots=True)
class _Entry:
    fn: WorkflowFn
    compensate_error_branch: bool
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Slot:
    """The run of one gid in this process, and how many callers use it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def _grpc_error_of(e: BaseException) -> BaseException:
    """A gRPC error that escaped the workflow function, as the SDK's error (ABORTED is a
    `Failure`, as DTM's workflow reads it); anything else unchanged."""
    try:
        import grpc.aio
    except ImportError:  # no grpc extra: there can be no gRPC error either
        return e
    if isinstance(e, grpc.aio.AioRpcError):
        from dtmx.client.grpc import error_from_rpc

        return error_from_rpc(e)
    return e


class Workflows:
    """The workflows of one application, and where the server calls them back.

    `callback` is the URL of the resume endpoint this application serves: an HTTP URL
    (mount `dtmx.client.workflow.starlette_endpoint` / `aiohttp_handler` there), or for a
    gRPC resume ``host:port/workflow.Workflow/Execute`` (`add_grpc_servicer`). The server
    calls it for a workflow that has not finished (a crash, an error, `Ongoing`), and the
    workflow is run again, replaying the steps already recorded.

        workflows = Workflows(client, callback="http://127.0.0.1:8000/workflow/resume")

        @workflows.register("transfer")
        async def transfer(wf: Workflow, data: bytes) -> None:
            await wf.new_branch().do(debit)
            await wf.new_branch().post(f"{bank}/TransIn", data)

        await workflows.execute("transfer", gid, b'{"amount": 30}')
    """

    def __init__(self, client: DtmClient, callback: str, *, barrier_table: str = DEFAULT_TABLE
                 ) -> None:
        if not callback:
            raise ValueError("give the URL where the server calls the workflows back")
        if not isinstance(client.transport, WorkflowTransport):
            raise TypeError(
                f"{type(client.transport).__name__} cannot run workflows (no prepare_workflow)"
            )
        self.client = client
        self._transport: WorkflowTransport = client.transport
        self.callback = callback
        #: "http" or "grpc": how the server calls `callback`.
        self.protocol: str = "http" if callback.startswith(_HTTP_SCHEMES) else "grpc"
        #: The barrier table the steps' and callbacks' barriers use (`schema.name` or `name`).
        self.barrier_table = barrier_table
        self._entries: dict[str, _Entry] = {}
        self._running: dict[str, _Slot] = {}

    def register(
        self,
        name: str,
        *,
        compensate_error_branch: bool = False,
        retry_interval: int = 0,
        timeout_to_fail: int = 0,
        request_timeout: int = 0,
        branch_headers: Mapping[str, str] | None = None,
    ) -> Callable[[F], F]:
        """Decorator: register `fn` as the workflow `name` (once per name).

        `compensate_error_branch` also rolls back a branch whose own action failed (for
        actions that may have had an effect even so). The other options are the
        transaction's, in seconds (0: the server's default).
        """
        if name in self._entries:
            raise ValueError(f"a workflow is already registered as {name!r}")
        options = {
            "retry_interval": retry_interval,
            "timeout_to_fail": timeout_to_fail,
            "request_timeout": request_timeout,
            "branch_headers": dict(branch_headers or {}),
        }

        def deco(fn: F) -> F:
            require_async(name, fn)
            self._entries[name] = _Entry(fn, compensate_error_branch, options)
            return fn

        return deco

    def add(self, name: str, fn: WorkflowFn, **options: Any) -> None:
        """Register `fn` as `name` without a decorator (same options as `register`)."""
        self.register(name, **options)(fn)

    @property
    def names(self) -> list[str]:
        """The registered workflow names."""
        return sorted(self._entries)

    async def execute(self, name: str, gid: str, data: Any = b"", *, wait: bool = True) -> bytes:
        """Run workflow `name` as transaction `gid` with input `data`, or resume it.

        Returns the workflow's result as bytes (also when it had already succeeded).
        Raises `Failure` when it failed (its branches rolled back), `Ongoing` when it is
        not finished (the server resumes it later), `WorkflowDiverged`, or the error that
        stopped it (the server resumes it later too).

        One run per gid at a time in this process: a second one waits for the first to
        end, or with ``wait=False`` (the resume endpoint) raises `Ongoing` at once, so a
        resume arriving while the first run is still going does not replay beside it.
        """
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownWorkflow(f"workflow {name!r} is not registered here")
        slot = self._running.setdefault(gid, _Slot())
        if slot.lock.locked() and not wait:
            raise Ongoing(f"workflow {gid} is running in this process")
        slot.users += 1
        try:
            async with slot.lock:
                return await self._run(entry, name, gid, data)
        finally:
            slot.users -= 1
            if not slot.users:
                del self._running[gid]

    async def _run(self, entry: _Entry, name: str, gid: str, data: Any) -> bytes:
        input_ = to_bytes(data)
        trans = WorkflowTrans(self.client, gid, custom_data(name, input_), self.callback)
        trans.protocol = self.protocol
        trans.set_options(**entry.options)
        progress = parse_progress(await self._transport.prepare_workflow(trans.to_body()))
        if progress.status is Status.SUCCEED:
            return progress.result
        if progress.status is Status.FAILED:
            raise Failure(progress.rollback_reason or f"workflow {gid} failed")
        wf = Workflow(
            self.client, trans, name, input_, progress.steps,
            compensate_error_branch=entry.compensate_error_branch,
            barrier_table=self.barrier_table,
        )
        token = current_workflow.set(wf)
        failure: Failure | None = None
        result = b""
        try:
            result = to_bytes(await entry.fn(wf, input_))
        except Exception as e:  # sorted below
            err = _grpc_error_of(e)
            if not isinstance(err, Failure):
                if err is e:
                    raise
                raise err from e
            failure = err
        finally:
            current_workflow.reset(token)
        wf.check_all_reached()
        token = current_workflow.set(wf)
        try:
            await wf.finish(failure)
        finally:
            current_workflow.reset(token)
        await self._submit(trans, result, failure)
        if failure is not None:
            raise failure
        return result

    async def _submit(self, trans: WorkflowTrans, result: bytes, failure: Failure | None) -> None:
        status = Status.SUCCEED if failure is None else Status.FAILED
        reason = "" if failure is None else failure.message[:_MAX_REASON]
        body = {
            "gid": trans.gid,
            "trans_type": TransType.WORKFLOW.value,
            "req_extra": submit_extra(status, result, reason),
        }
        try:
            await self.client.transport.submit(body)
        except DtmError as e:
            # The outcome is decided and recorded step by step: a failed submit is retried
            # by the next resume, which replays to the same outcome. Never a Failure here.
            raise DtmError(f"submitting workflow {trans.gid}: {e.message}") from e
