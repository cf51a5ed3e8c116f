"""tests/support/scratch.py on the real servers: a scratch store is made and dropped with its
block; the sweep drops old scratch names only, never a young one or a name of another form."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support import scratch as sc


def make(driver: str, name: str) -> None:
    """`name` made as a scratch store is, under any name (a key under its tag on Redis)."""
    if driver != "redis":
        sc.sql_run(driver, sc.sql_ddl(driver, "CREATE", name))
        return
    r = sc.redis_client()
    try:
        r.set("{" + name + "}:probe", "1")
        r.set("{" + name + ":3}:probe", "1")  # a partition's key
    finally:
        r.close()


def unmake(driver: str, name: str) -> None:
    if driver != "redis":
        sc.sql_run(driver, sc.sql_ddl(driver, "DROP", name))
        return
    r = sc.redis_client()
    try:
        r.delete("{" + name + "}:probe", "{" + name + ":3}:probe")
    finally:
        r.close()


def test_names_carry_their_time_and_only_ours_parse() -> None:
    n = sc.new_name("dtmx_it", now=1_764_570_000)
    assert n.startswith("dtmx_it_t1764570000_") and sc.made_at(n) == 1_764_570_000
    for other in ("dtm", "dtm_barrier", "test", "bench_dtmx", "dtmx_it_3fa9c2d1",
                  "dtmx_itx_t1764570000_3fa9c2d1", "dtmx_it_t1764570000_3fa9c2d1x",
                  "xdtmx_it_t1764570000_3fa9c2d1", "dtmx_test_store", "dtmx_embed"):
        assert sc.made_at(other) is None, other
    with pytest.raises(ValueError):
        sc.new_name("bench")
    young, old = sc.new_name("xa", now=10_000), sc.new_name("jrpc", now=1_000)
    assert sc.stale(["dtm", young, old, "xa_3fa9c2d1"], now=10_100, age=3600) == [old]


@pytest.mark.parametrize("driver", ["mysql", "postgres", "redis"])
def test_scratch_is_dropped_with_its_block(driver: str) -> None:
    with sc.scratch(driver, "dtmx_it") as name:
        make(driver, name)  # as the store under test does
        assert name in sc.existing(driver)
    assert name not in sc.existing(driver)


@pytest.mark.parametrize("driver", ["mysql", "postgres", "redis"])
def test_sweep_drops_old_scratch_names_only(driver: str) -> None:
    now = time.time()
    old = sc.new_name("dtmx_wf", now=now - 2 * sc.SWEEP_AGE)
    young = sc.new_name("dtmx_wf", now=now - sc.SWEEP_AGE / 2)  # a run under way elsewhere
    legacy = "dtmx_wf_" + old.rsplit("_", 1)[1]  # no time stamp: not provably ours to drop
    foreign = "dtmxkeep_t" + old.split("_t", 1)[1]  # another prefix, same form otherwise
    made: list[Any] = [old, young, legacy, foreign]
    try:
        for n in made:
            make(driver, n)
        dropped = sc.sweep(driver, now=now)
        there = set(sc.existing(driver))
        assert old in dropped and old not in there
        assert {young, legacy, foreign} <= there
        assert all(sc.made_at(n) is not None for n in dropped)
    finally:
        for n in made:
            unmake(driver, n)
