"""tests/support/scratch.py on the real servers: a scratch store is made and dropped with its
block; the sweep drops old scratch names only, never a young one or a name of another form."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support import scratch as sc


def names(driver: str) -> set[str]:
    """The databases (MySQL), schemas (PostgreSQL) or key tags (Redis) there are now."""
    if driver == "redis":
        r = sc._redis()
        try:
            return set(sc._redis_keys(r, "{*"))
        finally:
            r.close()
    conn = sc._sql(driver)
    try:
        if driver == "mysql":
            cur = conn.cursor()
            cur.execute("SHOW DATABASES")
            return {row[0] for row in cur.fetchall()}
        return {row[0] for row in conn.execute(
            "SELECT schema_name FROM information_schema.schemata").fetchall()}
    finally:
        conn.close()


def make(driver: str, name: str) -> None:
    """`name` made as a scratch store is, under any name (a key under its tag on Redis)."""
    if driver == "redis":
        r = sc._redis()
        try:
            r.set("{" + name + "}:probe", "1")
            r.set("{" + name + ":3}:probe", "1")  # a partition's key
        finally:
            r.close()
    else:
        conn = sc._sql(driver)
        try:
            if driver == "mysql":
                conn.cursor().execute(f"CREATE DATABASE `{name}`")
            else:
                conn.execute(f'CREATE SCHEMA "{name}"')
        finally:
            conn.close()


def unmake(driver: str, name: str) -> None:
    if driver == "redis":
        r = sc._redis()
        try:
            r.delete("{" + name + "}:probe", "{" + name + ":3}:probe")
        finally:
            r.close()
        return
    conn = sc._sql(driver)
    try:
        if driver == "mysql":
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        else:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        conn.close()


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
        if driver == "redis":
            make(driver, name)  # a prefix exists by its keys
        assert name in names(driver)
    assert name not in names(driver)


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
        there = names(driver)
        assert old in dropped and old not in there
        assert {young, legacy, foreign} <= there
        assert all(sc.made_at(n) is not None for n in dropped)
    finally:
        for n in made:
            unmake(driver, n)
