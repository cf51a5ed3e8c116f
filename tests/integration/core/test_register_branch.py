"""registerBranch in the engine, on a real SQLite store: one store round trip when it
succeeds, the type checked by the store, and Limits.MaxBranches counting registrations
as it counts a saga's steps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dtmx.core.limits import Limits
from dtmx.core.models import Op, Status, TransType
from dtmx.core.request import Registration, TransRequest
from dtmx.core.timing import Timing
from dtmx.engine import Engine
from dtmx.errors import BadRequest, DuplicateBranch, Failure
from dtmx.invoke.http_invoker import HttpInvoker
from dtmx.stores.sql.sqlite import SqliteStore
from tests.support.clock import FakeClock

URLS = {"confirm": "http://127.0.0.1:1/c", "cancel": "http://127.0.0.1:1/x"}


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    store = SqliteStore(str(tmp_path / "r.db"))
    await store.open()
    invoker = HttpInvoker()
    eng = Engine(store=store, invoker=invoker, clock=FakeClock(), timing=Timing(),
                 limits=Limits(MaxBranches=3))
    yield eng
    await eng.close()
    await invoker.close()
    await store.close()


async def _register(e: Engine, gid: str, branch_id: str,
                    tt: TransType = TransType.TCC) -> None:
    urls = URLS if tt is TransType.TCC else {"url": "http://127.0.0.1:1/xa"}
    await e.register_branch(Registration(gid=gid, trans_type=tt, branch_id=branch_id,
                                         payload=b"{}", urls=urls))


async def test_registration_is_one_round_trip(engine: Engine) -> None:
    await engine.prepare(TransRequest(gid="g1", trans_type=TransType.TCC))
    before = engine.store.roundtrips
    await _register(engine, "g1", "01")
    await _register(engine, "g1", "02")
    assert engine.store.roundtrips - before == 2
    with pytest.raises(DuplicateBranch):
        await _register(engine, "g1", "02")
    assert [b.branch_id for b in await engine.store.get_branches(gid="g1")] == [
        "01", "01", "02", "02"]


async def test_max_branches_counts_registrations(engine: Engine) -> None:
    await engine.prepare(TransRequest(gid="g2", trans_type=TransType.TCC))
    for b in ("01", "02", "03"):
        await _register(engine, "g2", b)
    with pytest.raises(BadRequest, match=r"Limits\.MaxBranches \(3\)"):
        await _register(engine, "g2", "04")
    assert len(await engine.store.get_branches(gid="g2")) == 6
    t = await engine.store.get(gid="g2")
    assert t is not None and t.status is Status.PREPARED


async def test_max_branches_counts_workflow_steps(engine: Engine) -> None:
    await engine.prepare_workflow(TransRequest(
        gid="g4", trans_type=TransType.WORKFLOW, custom_data='{"name": "wf", "data": null}'))

    async def record(branch_id: str, op: Op) -> None:
        await engine.register_branch(Registration(
            gid="g4", trans_type=TransType.WORKFLOW, branch_id=branch_id, payload=b"",
            urls={}, op=op, status=Status.SUCCEED))

    for b in ("01", "02", "03"):  # three steps, each an action and its compensation
        await record(b, Op.ACTION)
        await record(b, Op.COMPENSATE)
    with pytest.raises(BadRequest, match=r"has 6 recorded step ops \(two a step\): more is "
                                         r"beyond Limits\.MaxBranches \(3\)"):
        await record("04", Op.ACTION)
    assert len(await engine.store.get_branches(gid="g4")) == 6


async def test_wrong_type_and_missing_gid(engine: Engine) -> None:
    await engine.prepare(TransRequest(gid="g3", trans_type=TransType.TCC))
    with pytest.raises(BadRequest, match="is a tcc, not a xa"):
        await _register(engine, "g3", "01", TransType.XA)
    assert await engine.store.get_branches(gid="g3") == []
    with pytest.raises(Failure, match="no trans with gid: nope"):
        await _register(engine, "nope", "01")
