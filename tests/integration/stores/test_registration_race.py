"""A branch registered (registerBranch answered 200) is never left out of the second phase.

Registration is accepted only while the transaction is `prepared`; whatever moves it out of
`prepared` (the poller's timeout, submit, abort) must then see every branch whose
registration succeeded. These tests put a registration exactly in the window where it used
to be lost, on every store (issue 14: a TCC timed out by the poller kept the cancel of a
branch registered meanwhile `prepared` forever).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

from dtmx.clock import GidFactory
from dtmx.core import tcc
from dtmx.core.models import Branch, Change, Op, Status, Transaction, TransType
from dtmx.core.request import TransRequest, parse_registration
from dtmx.core.timing import Timing
from dtmx.engine import Engine
from dtmx.invoke.http_invoker import HttpInvoker
from dtmx.poller import Poller
from dtmx.service import Service
from dtmx.stores.base import Store
from dtmx.stores.sql.postgres import add_branches_statement
from tests.integration.stores.conftest import empty_tables, sql_store
from tests.support.busi import BusiServer
from tests.support.clock import FakeClock
from tests.support.util import aeventually, free_port

T0 = 1_700_000_000.0


def _prepared_tcc(gid: str) -> Transaction:
    return Transaction(gid=gid, trans_type=TransType.TCC, status=Status.PREPARED,
                       create_time=T0, update_time=T0, next_cron_time=T0 + 30,
                       next_cron_interval=10.0)


def _keys(branches: Sequence[object]) -> set[tuple[str, str]]:
    return {(b.branch_id, b.op.value) for b in branches}  # type: ignore[attr-defined]


async def test_postgres_take_sees_a_registration_it_waited_for(tmp_path: Path) -> None:
    """PostgreSQL reads a statement's rows from the snapshot taken when it began: a take
    that waited for a registration's row lock must not answer with the branches as they
    were before that registration committed."""
    s = sql_store("postgres", tmp_path)
    await s.open()
    try:
        await empty_tables(s)
        gid = "race-" + uuid.uuid4().hex
        assert await s.create(trans=_prepared_tcc(gid), branches=[])
        new = tcc.gen_registered(TransType.TCC, gid, "01", b"{}",
                                 {"cancel": "http://b/c", "confirm": "http://b/f"}, T0)
        sql, args = add_branches_statement(gid, T0, new, Status.PREPARED)
        change = Change(status=Status.ABORTING, owner="o1", next_cron_time=T0 + 30)
        async with s.backend.transaction() as tx:  # registerBranch, not yet committed
            assert (await tx.fetch(sql, args))[0][0] == 1
            taking = asyncio.create_task(
                s.take(gid=gid, now=T0 + 1, expect_status=Status.PREPARED, change=change))

            async def blocked() -> bool:
                async with s.backend.session() as ex:
                    rows = await ex.fetch(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE '%trans_global%'")
                return rows[0][0] >= 1

            await aeventually(blocked, timeout=10)
        taken = await taking
        if taken is None:  # refused: the row changed while it waited; a retry sees it all
            taken = await s.take(gid=gid, now=T0 + 1, expect_status=Status.PREPARED,
                                 change=change)
            assert taken is not None
        assert taken[0].status is Status.ABORTING
        assert _keys(taken[1]) == {("01", "cancel"), ("01", "confirm")}
    finally:
        await s.close()


class _RegisterAfterRead:
    """The real store, except that once armed, a registration lands right after the next
    branch read: between the poller's read and its status write, where it used to be lost.
    (A fault injected by the test around the real store; nothing of the store is faked.)"""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.armed: Callable[[], Awaitable[None]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get_branches(self, *, gid: str) -> list[Branch]:
        branches = await self._store.get_branches(gid=gid)
        hook, self.armed = self.armed, None
        if hook is not None:
            await hook()
        return branches


async def test_a_branch_registered_while_the_poller_times_out_is_cancelled(
    store: Store,
) -> None:
    clock = FakeClock()
    racy = _RegisterAfterRead(store)
    invoker = HttpInvoker()
    engine = Engine(store=cast(Store, racy), invoker=invoker, clock=clock,
                    timing=Timing())
    svc = Service(engine=engine, new_gid=GidFactory(clock))
    poller = Poller(svc.engine, interval=3)
    gid = "race-" + uuid.uuid4().hex
    with BusiServer(free_port()) as busi:
        try:
            await svc.prepare(TransRequest(gid=gid, trans_type=TransType.TCC))

            async def register(bid: str) -> None:
                await svc.register_branch(parse_registration({
                    "gid": gid, "branch_id": bid, "trans_type": "tcc", "data": "{}",
                    "confirm": f"{busi.url}/TransOutConfirm",
                    "cancel": f"{busi.url}/TransOutCancel"}))

            await register("01")
            racy.armed = lambda: register("02")  # answered without error: it must be cancelled
            clock.advance(Timing().timeout_to_fail + 1)
            assert await poller.poll_once() == 1

            async def failed() -> bool:
                t = await store.get(gid=gid)
                return t is not None and t.status is Status.FAILED

            await aeventually(failed, timeout=10)
            assert racy.armed is None  # the registration did land in the window
            ops = {(b.branch_id, b.op): b.status for b in await store.get_branches(gid=gid)}
            assert ops == {("01", Op.CANCEL): Status.SUCCEED, ("01", Op.CONFIRM): Status.PREPARED,
                           ("02", Op.CANCEL): Status.SUCCEED, ("02", Op.CONFIRM): Status.PREPARED}
            assert busi.state.count("TransOutCancel", gid) == 2
        finally:
            await poller.stop()
            await svc.close()
            await invoker.close()


async def test_take_never_misses_a_branch_whose_registration_succeeded(store: Store) -> None:
    """The contract of take against add_branches, raced on every store: a registration
    that returned True is among the branches the take returns."""
    for round_ in range(20):
        gid = f"race-{round_}-" + uuid.uuid4().hex
        assert await store.create(trans=_prepared_tcc(gid), branches=[])
        new = tcc.gen_registered(TransType.TCC, gid, "01", b"{}",
                                 {"cancel": "http://b/c", "confirm": "http://b/f"}, T0)
        change = Change(status=Status.ABORTING, owner="o1", next_cron_time=T0 + 30)
        added, taken = await asyncio.gather(
            store.add_branches(gid=gid, now=T0, branches=new, expect_status=Status.PREPARED),
            store.take(gid=gid, now=T0, expect_status=Status.PREPARED, change=change))
        if taken is None:  # refused because the row changed meanwhile: a retry takes it
            assert added
            taken = await store.take(gid=gid, now=T0, expect_status=Status.PREPARED,
                                     change=change)
            assert taken is not None
        assert _keys(taken[1]) == ({("01", "cancel"), ("01", "confirm")} if added else set())


async def test_an_abort_while_aborting_leaves_the_owners_run_alone(store: Store) -> None:
    """A client's abort that loses the race with the poller's timeout (or repeats itself
    after a lost answer) finds the TCC `aborting` with a live owner. It is accepted; it used
    to take the row over and start a second run beside the owner's, both calling the
    cancels (issue 14, found by the simulation: sim/)."""
    clock = FakeClock()
    invoker = HttpInvoker()
    engine = Engine(store=store, invoker=invoker, clock=clock, timing=Timing())
    gid = "abort-" + uuid.uuid4().hex
    now = clock.now()
    trans = Transaction(gid=gid, trans_type=TransType.TCC, status=Status.ABORTING,
                        create_time=now, update_time=now, next_cron_time=now + 30,
                        next_cron_interval=10.0, owner="the-poller-run")
    branches = tcc.gen_registered(TransType.TCC, gid, "01", b"{}",
                                  {"cancel": "http://127.0.0.1:9/c", "confirm": "http://b/f"},
                                  now)
    try:
        assert await store.create(trans=trans, branches=branches)
        await engine.abort(TransRequest(gid=gid, trans_type=TransType.TCC))
        assert engine.runs_in_flight == 0
        stored = await store.get(gid=gid)
        assert stored is not None
        assert (stored.status, stored.owner) == (Status.ABORTING, "the-poller-run")
    finally:
        await engine.close()
        await invoker.close()
