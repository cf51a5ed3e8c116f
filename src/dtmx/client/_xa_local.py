"""XA, the branch side: a branch's local work as a database XA transaction.

One entry point serves both phases, as in DTM (the branch's URL is its `phase2_url`):

- op "action": start an XA transaction named gid + "-" + branch_id, insert the barrier row,
  run the business, register the branch's second-phase URL with the server, end and prepare.
  Any error rolls the XA transaction back and propagates, so the global transaction aborts.
- op "commit" / "rollback": finish the prepared XA transaction by its name, from any
  connection of any process. A transaction that is not (or no longer) prepared is taken as
  finished, so a repeated call succeeds; a prepared transaction left by a crashed branch
  process is still in the database and is finished by this call.

A rollback also inserts the action's barrier row (reason "rollback"); an action that
arrives after its rollback (a hanging request) finds the row and fails instead of preparing
work that nobody would finish.

MySQL/MariaDB use XA START / END / PREPARE / COMMIT / ROLLBACK; PostgreSQL uses BEGIN,
PREPARE TRANSACTION, COMMIT PREPARED and ROLLBACK PREPARED and needs
max_prepared_transactions > 0. The connection must be in autocommit mode with no transaction
open (asyncmy/PyMySQL ``autocommit=True``, psycopg ``autocommit=True``; asyncpg always is):
MariaDB refuses XA COMMIT inside the implicit transaction of autocommit=0 (XAER_OUTSIDE), and
PostgreSQL runs COMMIT PREPARED only outside a transaction block.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import orjson

from dtmx.client._branch import result_for
from dtmx.client._consts import Op, TransType
from dtmx.client._errors import Failure, InvalidBranchInfo
from dtmx.client.barrier._algo import BarrierRow
from dtmx.client.barrier._drivers import async_adapter, sync_adapter
from dtmx.client.barrier._sql import DEFAULT_TABLE, Dialect

if TYPE_CHECKING:
    from dtmx.client._client import DtmClient

#: DTM's barrier id of an XA branch's one barrier row.
XA_BARRIER_ID = "01"
#: MySQL's limit on the global part of an XA id, in bytes.
_MYSQL_GTRID_MAX = 64
_PHASE2 = (Op.COMMIT, Op.ROLLBACK)
# Errors that mean "no prepared transaction by that name": MySQL XAER_NOTA (1397),
# PostgreSQL 42704 ("prepared transaction with identifier ... does not exist").
_UNKNOWN_XID = re.compile(r"XAER_NOTA|1397|does not exist")
# MariaDB's answer when the branch was rolled back already: done, for a rollback only.
_ROLLED_BACK = re.compile(r"XA_RBROLLBACK|1402")


class XaStep(Enum):
    """One statement of the XA protocol."""

    START = "start"
    END = "end"
    PREPARE = "prepare"
    ABORT = "abort"  # roll back a started, unprepared transaction
    COMMIT = "commit"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class XaBranchInfo:
    """The DTM query parameters of an XA branch call."""

    gid: str
    branch_id: str
    op: Op
    phase2_url: str

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> XaBranchInfo:
        """Parse an XA branch call's query; raise `InvalidBranchInfo` naming what is wrong."""
        values = {k: _first(query.get(k)) for k in ("gid", "branch_id", "op", "trans_type")}
        missing = [k for k, v in values.items() if not v]
        if missing:
            raise InvalidBranchInfo(f"not an XA branch call: missing {', '.join(missing)}")
        if values["trans_type"] != TransType.XA.value:
            raise InvalidBranchInfo(f"not an XA branch call: trans_type {values['trans_type']!r}")
        if values["op"] not in (Op.ACTION.value, Op.COMMIT.value, Op.ROLLBACK.value):
            raise InvalidBranchInfo(f"op {values['op']!r} is not an XA op")
        phase2_url = _first(query.get("phase2_url"))
        if values["op"] == Op.ACTION.value and not phase2_url:
            raise InvalidBranchInfo("not an XA branch call: missing phase2_url")
        return cls(values["gid"], values["branch_id"], Op(values["op"]), phase2_url)

    @property
    def xid(self) -> str:
        """The database's name of this branch's XA transaction (DTM's: gid-branch_id)."""
        return f"{self.gid}-{self.branch_id}"

    def barrier_row(self, reason: Op) -> BarrierRow:
        """The action's barrier row; `reason` is the op that wrote it."""
        return BarrierRow(
            TransType.XA.value, self.gid, self.branch_id, Op.ACTION.value, XA_BARRIER_ID,
            reason.value,
        )

    def registration(self) -> dict[str, str]:
        """The registerBranch body: the server calls `phase2_url` with commit or rollback."""
        return {
            "gid": self.gid,
            "trans_type": TransType.XA.value,
            "branch_id": self.branch_id,
            "url": self.phase2_url,
        }


def _first(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    return "" if value is None else str(value)


def xa_sql(dialect: Dialect, step: XaStep, xid: str) -> str | None:
    """The statement of `step` for `xid` in `dialect`; None when the dialect has none."""
    if dialect is Dialect.MYSQL:
        if len(xid.encode()) > _MYSQL_GTRID_MAX:
            raise ValueError(f"XA id {xid!r} is longer than MySQL's {_MYSQL_GTRID_MAX} bytes")
        # Backslashes are escapes in MySQL's default mode, quotes are doubled everywhere.
        lit = "'" + xid.replace("\\", "\\\\").replace("'", "''") + "'"
        verb = {XaStep.ABORT: "ROLLBACK"}.get(step, step.value.upper())
        return f"XA {verb} {lit}"
    if dialect is Dialect.POSTGRES:
        lit = "'" + xid.replace("'", "''") + "'"
        return {
            XaStep.START: "BEGIN",
            XaStep.END: None,
            XaStep.PREPARE: f"PREPARE TRANSACTION {lit}",
            XaStep.ABORT: "ROLLBACK",
            XaStep.COMMIT: f"COMMIT PREPARED {lit}",
            XaStep.ROLLBACK: f"ROLLBACK PREPARED {lit}",
        }[step]
    raise ValueError(f"XA needs MySQL, MariaDB or PostgreSQL, not {dialect.value}")


def is_finished(exc: BaseException, op: Op) -> bool:
    """Whether a driver error of the second phase `op` means the work is done already: no
    prepared transaction by that name (finished earlier), or, for a rollback, rolled back."""
    text = f"{exc} {getattr(exc, 'args', '')}"
    if _UNKNOWN_XID.search(text):
        return True
    return op is Op.ROLLBACK and bool(_ROLLED_BACK.search(text))


async def xa_local_transaction(
    client: DtmClient,
    query: Mapping[str, Any],
    conn: Any,
    busi: Callable[[Any], Awaitable[object]],
    *,
    table: str = DEFAULT_TABLE,
) -> None:
    """Serve one XA branch call on `conn` (asyncmy, asyncpg, or an `AsyncAdapter`).

    For op "action", `await busi(conn)` runs inside the XA transaction, which is then
    registered with the server through `client` and prepared; for "commit" / "rollback",
    the prepared transaction is finished and `busi` is not called. Raises
    `InvalidBranchInfo` for a query that is not an XA call, `Failure` for an action that
    comes after its rollback, and whatever `busi` or the driver raised.
    """
    info = XaBranchInfo.from_query(query)
    db = async_adapter(conn, table)

    async def run(step: XaStep) -> None:
        sql = xa_sql(db.dialect, step, info.xid)
        if sql is not None:
            await db.execute(sql)

    if info.op in _PHASE2:
        try:
            await run(XaStep(info.op.value))
        except Exception as e:
            if not is_finished(e, info.op):
                raise
        if info.op is Op.ROLLBACK:
            async with db.transaction():
                await db.insert_ignore(info.barrier_row(Op.ROLLBACK))
        return
    await run(XaStep.START)
    ended = False
    try:
        if not await db.insert_ignore(info.barrier_row(Op.ACTION)):
            raise Failure(f"XA branch {info.xid} was rolled back already")
        await busi(db.conn)
        await client.transport.register_branch(info.registration())
        ended = True
        await run(XaStep.END)
        await run(XaStep.PREPARE)
    except BaseException as e:
        try:
            if not ended:
                await run(XaStep.END)
            await run(XaStep.ABORT)
        except Exception as cleanup:  # the business error matters more; keep both
            e.add_note(f"dtmx: rolling back XA {info.xid} failed too: {cleanup}")
        raise


#: Opens a connection for one XA branch call, e.g. an asyncpg or asyncmy pool's `acquire`.
Connect = Callable[[], AbstractAsyncContextManager[Any]]
#: The business of an XA branch: `busi(conn, payload)`, payload = the request's JSON or None.
XaBusiness = Callable[[Any, Any], Awaitable[object]]
_HTTP_BAD_REQUEST = 400


async def serve_xa(
    client: DtmClient,
    query: Mapping[str, Any],
    body: bytes,
    connect: Connect,
    busi: XaBusiness,
    *,
    table: str = DEFAULT_TABLE,
) -> tuple[int, dict[str, Any]]:
    """One XA branch call, answered: (HTTP status, JSON body) for the framework adapters.

    A call that is not an XA branch call, or whose body is not JSON, is a 400.
    """
    try:
        XaBranchInfo.from_query(query)
        payload = orjson.loads(body) if body else None
    except (InvalidBranchInfo, orjson.JSONDecodeError) as e:
        return _HTTP_BAD_REQUEST, {"message": str(e)}
    try:
        async with connect() as conn:
            await xa_local_transaction(
                client, query, conn, lambda c: busi(c, payload), table=table
            )
    except Exception as e:
        return result_for(e)
    return result_for(None)


def xa_local_transaction_sync(
    register: Callable[[dict[str, str]], object],
    query: Mapping[str, Any],
    conn: Any,
    busi: Callable[[Any], object],
    *,
    table: str = DEFAULT_TABLE,
) -> None:
    """Blocking twin of `xa_local_transaction` for PyMySQL and psycopg (autocommit)
    connections; `register(body)` registers the branch with the server. Applications call
    `dtmx.client.sync.xa_local_transaction`, which passes a `SyncDtmClient`'s register.
    """
    info = XaBranchInfo.from_query(query)
    db = sync_adapter(conn, table)

    def run(step: XaStep) -> None:
        sql = xa_sql(db.dialect, step, info.xid)
        if sql is not None:
            db.execute(sql)

    if info.op in _PHASE2:
        try:
            run(XaStep(info.op.value))
        except Exception as e:
            if not is_finished(e, info.op):
                raise
        if info.op is Op.ROLLBACK:
            with db.transaction():
                db.insert_ignore(info.barrier_row(Op.ROLLBACK))
        return
    run(XaStep.START)
    ended = False
    try:
        if not db.insert_ignore(info.barrier_row(Op.ACTION)):
            raise Failure(f"XA branch {info.xid} was rolled back already")
        busi(db.conn)
        register(info.registration())
        ended = True
        run(XaStep.END)
        run(XaStep.PREPARE)
    except BaseException as e:
        try:
            if not ended:
                run(XaStep.END)
            run(XaStep.ABORT)
        except Exception as cleanup:  # the business error matters more; keep both
            e.add_note(f"dtmx: rolling back XA {info.xid} failed too: {cleanup}")
        raise
