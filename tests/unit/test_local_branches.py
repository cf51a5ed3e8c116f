"""Local branches without a store: which functions a transaction needs, the invoker's
rules (missing name, timeout, never raising) and the outcome of a local function (the HTTP
branch rule), and the registry's names."""

from __future__ import annotations

import asyncio

import pytest

from dtmx.client import Failure, Ongoing
from dtmx.core.local import local_names, missing_local
from dtmx.core.models import Branch, Op, Outcome, Status, Transaction, TransType
from dtmx.embedded import Functions, LocalBranch
from dtmx.invoke.base import BranchCall
from dtmx.invoke.local import LocalInvoker


def _trans(query_prepared: str = "") -> Transaction:
    return Transaction(gid="g", trans_type=TransType.MSG, status=Status.PREPARED,
                       query_prepared=query_prepared)


def _branch(url: str, bid: str = "01") -> Branch:
    return Branch(gid="g", branch_id=bid, op=Op.ACTION, url=url, data=b"")


def test_missing_local_names_branches_and_query_prepared() -> None:
    t = _trans("local://qp")
    bs = [_branch("local://a"), _branch("http://x/y", "02"), _branch("h:1/p.S/M", "03")]
    assert local_names(t, bs) == {"qp", "a"}
    assert missing_local(t, bs, {"a"}) == ["qp"]
    assert missing_local(t, bs, {"a", "qp"}) == []
    assert missing_local(_trans(), [_branch("http://x/y")], frozenset()) == []


def _call(url: str, timeout: float = 1.0, payload: bytes = b'{"n": 1}') -> BranchCall:
    return BranchCall(url=url, gid="g", trans_type=TransType.SAGA, branch_id="01",
                      op=Op.ACTION, payload=payload, timeout=timeout)


async def test_outcomes_follow_the_http_branch_rule() -> None:
    fns = Functions()
    seen: list[LocalBranch] = []

    @fns.local("ok")
    async def ok(b: LocalBranch) -> str:
        seen.append(b)
        return "ignored"

    async def raising(exc: BaseException) -> None:
        raise exc

    for name, exc in (("fail", Failure("no money")), ("later", Ongoing()),
                      ("boom", RuntimeError("db down"))):
        fns.add(lambda b, e=exc: raising(e), name)

    inv = LocalInvoker(fns)
    assert (await inv.call(_call("local://ok"))).outcome is Outcome.SUCCESS
    assert seen[0].json() == {"n": 1} and seen[0].op == "action" and seen[0].gid == "g"
    fail = await inv.call(_call("local://fail"))
    assert fail.outcome is Outcome.FAILURE and "no money" in fail.detail
    assert (await inv.call(_call("local://later"))).outcome is Outcome.ONGOING
    boom = await inv.call(_call("local://boom"))
    assert boom.outcome is Outcome.ERROR and "db down" in boom.detail


async def test_invoker_never_raises() -> None:
    fns = Functions()

    @fns.local("slow")
    async def slow(b: LocalBranch) -> None:
        await asyncio.sleep(5)

    inv = LocalInvoker(fns)
    res = await inv.call(_call("local://slow", timeout=0.05))
    assert res.outcome is Outcome.ERROR and "timeout" in res.detail
    res = await inv.call(_call("local://nobody"))
    assert res.outcome is Outcome.ERROR and "no local function" in res.detail


def test_registry_names() -> None:
    fns = Functions()

    async def f(b: LocalBranch) -> None: ...

    async def g(b: LocalBranch) -> None: ...

    entry = fns.add(f, "pay.debit")
    assert entry.url == "local://pay.debit" and fns.url(entry) == fns.url("pay.debit")
    assert fns.url("local://pay.debit") == "local://pay.debit"
    assert fns.add(f, "pay.debit") == entry  # the same function again: no-op
    with pytest.raises(ValueError, match="already registered"):
        fns.add(g, "pay.debit")
    for bad in ("", "a b", "x:y", "a/b", "n" * 129):
        with pytest.raises(ValueError):
            fns.add(g, bad)
    with pytest.raises(KeyError):
        fns.url("unknown")
    assert list(fns) == ["pay.debit"] and len(fns) == 1 and "pay.debit" in fns
    default = Functions().local()(g)
    assert default.name == f"{g.__module__}.g"
