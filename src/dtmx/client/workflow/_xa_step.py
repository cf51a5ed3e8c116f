"""An XA step of a workflow: local work as a database XA transaction, prepared as the
branch's action and committed or rolled back with the workflow (DTM's `DoXa`).

The XA transaction is named as DTM names it, gid + "-" + branch_id, so the second phase
finds it from any connection of any process. A crash between PREPARE and the server's
record of the step leaves a prepared transaction nobody recorded: the replay first rolls
back any prepared transaction of that name (its work was never recorded, so nothing
depends on it) and then runs the step again. MySQL/MariaDB and PostgreSQL, with the
connection in autocommit mode (as `dtmx.client.xa_local_transaction` needs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from dtmx.client._consts import Op, Status, TransType
from dtmx.client._errors import Failure
from dtmx.client._xa_local import XA_BARRIER_ID, XaStep, is_finished, xa_sql
from dtmx.client.barrier import BranchBarrier
from dtmx.client.barrier._adapters import AsyncAdapter
from dtmx.client.barrier._algo import BarrierRow
from dtmx.client.barrier._drivers import async_adapter
from dtmx.client.workflow._outcome import Outcome, maybe_await, outcome_of_error
from dtmx.client.workflow._record import to_bytes

if TYPE_CHECKING:
    from dtmx.client.workflow._steps import Branch

#: Opens a connection for the step, e.g. an asyncmy or asyncpg pool's `acquire`.
Connect = Callable[[], AbstractAsyncContextManager[Any]]
#: The step's work on the connection, inside the XA transaction; returns its result.
XaWork = Callable[[Any], Awaitable[Any] | Any]


def _row(bb: BranchBarrier, reason: Op) -> BarrierRow:
    return BarrierRow(TransType.WORKFLOW.value, bb.gid, bb.branch_id, Op.ACTION.value,
                      XA_BARRIER_ID, reason.value)


async def _run(db: AsyncAdapter, step: XaStep, xid: str) -> None:
    sql = xa_sql(db.dialect, step, xid)
    if sql is not None:
        await db.execute(sql)


async def _finish(db: AsyncAdapter, op: Op, xid: str) -> None:
    """COMMIT or ROLLBACK the prepared `xid`; one that is not prepared is done already."""
    try:
        await _run(db, XaStep(op.value), xid)
    except Exception as e:
        if not is_finished(e, op):
            raise


async def xa_step(branch: Branch, connect: Connect, work: XaWork, name: str | None) -> bytes:
    """`Branch.xa`: see there."""
    wf = branch.wf
    xid = f"{wf.gid}-{branch.branch_id}"
    table = wf.barrier_table

    async def action(bb: BranchBarrier) -> Outcome:
        try:
            async with connect() as conn:
                db = async_adapter(conn, table)
                # a prepared transaction of this name was never recorded: it goes
                await _finish(db, Op.ROLLBACK, xid)
                await _run(db, XaStep.START, xid)
                ended = False
                try:
                    if not await db.insert_ignore(_row(bb, Op.ACTION)):
                        raise Failure(f"XA branch {xid} was rolled back already")
                    result = to_bytes(await maybe_await(work(db.conn)))
                    ended = True
                    await _run(db, XaStep.END, xid)
                    await _run(db, XaStep.PREPARE, xid)
                except BaseException as e:
                    try:
                        if not ended:
                            await _run(db, XaStep.END, xid)
                        await _run(db, XaStep.ABORT, xid)
                    except Exception as cleanup:  # the first error matters more
                        e.add_note(f"dtmx: rolling back XA {xid} failed too: {cleanup}")
                    raise
        except Exception as e:
            return outcome_of_error(e)
        return Outcome(Status.SUCCEED, result)

    async def commit(bb: BranchBarrier) -> None:
        async with connect() as conn:
            await _finish(async_adapter(conn, table), Op.COMMIT, xid)

    async def rollback(bb: BranchBarrier) -> None:
        async with connect() as conn:
            db = async_adapter(conn, table)
            await _finish(db, Op.ROLLBACK, xid)
            async with db.transaction():  # an action arriving after this one fails
                await db.insert_ignore(_row(bb, Op.ROLLBACK))

    commit.__qualname__ = f"xa commit {name or ''}".strip()
    rollback.__qualname__ = f"xa rollback {name or ''}".strip()
    try:
        return await wf.run_step(f"xa {name or getattr(work, '__qualname__', 'work')}", action)
    finally:
        # Both after the action, as DTM's DoXa: a failed action's transaction is rolled
        # back already, and its rollback then finds nothing to do.
        branch.on_commit(commit).on_rollback(rollback)
