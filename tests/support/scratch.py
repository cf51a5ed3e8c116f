"""Scratch stores: a MySQL database, a PostgreSQL schema or a Redis key prefix that one
fixture makes for itself and drops when it ends, so test runs leave nothing behind.

A name is `<prefix>_t<unix seconds>_<8 hex>`, e.g. `dtmx_it_t1764570000_3fa9c2d1`, with one
of PREFIXES. The embedded creation time tells a later run an abandoned name (its run was
killed before its teardown) from one a run going on right now (another checkout, another
terminal) uses: the first scratch store a process makes on a backend first sweeps that
backend of names of exactly this form made more than SWEEP_AGE ago. Nothing else is ever
dropped: not dtm, dtm_barrier, test, bench_*, nor names without the time stamp.

    with scratch_store("mysql", "xa", workdir) as block:   # a server's `Store` block
        ...
    with scratch("redis", "dtmx_store") as name:            # the bare name; prefix "{name}"
        ...
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from tests.support.services import mysql, postgres, redis_url, store_block

PREFIXES = (
    "dtmx_it", "dtmx_wf", "dtmx_wfx", "dtmx_wfc", "dtmx_wfk", "dtmx_tel", "dtmx_hostile",
    "dtmx_st", "dtmx_ms", "dtmx_pt", "dtmx_store", "dtmx_embed", "xa", "jrpc",
)
SWEEP_AGE = 3600.0  # seconds; a whole test run is bounded far below (scripts/test.sh)
_NAME = re.compile("(?:" + "|".join(PREFIXES) + r")_t(\d{10})_[0-9a-f]{8}")
_REDIS_TAG = re.compile(r"\{([^}:]*)(?::\d+)?\}")  # {name} or a partition's {name:N}
_LOCK_WAIT = 10  # seconds a DROP waits for a lock before it fails (never hangs a run)

_swept: set[str] = set()
_swept_lock = threading.Lock()


def new_name(prefix: str, now: float | None = None) -> str:
    """A fresh name under `prefix` (one of PREFIXES), stamped with the time it was made."""
    if prefix not in PREFIXES:
        raise ValueError(f"{prefix!r} is not one of the scratch prefixes {PREFIXES}")
    stamp = int(time.time() if now is None else now)
    return f"{prefix}_t{stamp:010d}_{uuid.uuid4().hex[:8]}"


def made_at(name: str) -> int | None:
    """The creation time embedded in a scratch name; None for any other name."""
    m = _NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def stale(names: Iterable[str], now: float, age: float = SWEEP_AGE) -> list[str]:
    """The scratch names among `names` made more than `age` seconds before `now`."""
    return [n for n in names if (t := made_at(n)) is not None and now - t > age]


def _sql(driver: str) -> Any:
    if driver == "mysql":
        import pymysql

        conn = pymysql.connect(**mysql().kwargs(), autocommit=True)
        conn.cursor().execute(f"SET SESSION lock_wait_timeout = {_LOCK_WAIT}")
        return conn
    import psycopg

    conn = psycopg.connect(**postgres().kwargs("postgres", db_key="dbname"), autocommit=True)
    conn.execute(f"SET lock_timeout = '{_LOCK_WAIT}s'")
    return conn


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(redis_url())


def _redis_keys(r: Any, match: str) -> dict[str, list[bytes]]:
    """Keys matching `match`, grouped by the name in their hash tag."""
    out: dict[str, list[bytes]] = {}
    for k in r.scan_iter(match=match, count=1000):
        m = _REDIS_TAG.match(k.decode(errors="replace"))
        if m:
            out.setdefault(m.group(1), []).append(k)
    return out


def _create(driver: str, name: str) -> None:
    if driver == "redis":
        return  # a key prefix exists by its keys
    conn = _sql(driver)
    try:
        if driver == "mysql":
            conn.cursor().execute(f"CREATE DATABASE `{name}` DEFAULT CHARACTER SET utf8mb4")
        else:
            conn.execute(f'CREATE SCHEMA "{name}"')
    finally:
        conn.close()


def _drop(driver: str, names: list[str], keys: dict[str, list[bytes]] | None = None) -> None:
    """Drop `names` (scratch names only) on `driver`; for Redis, `keys` if already found."""
    names = [n for n in names if made_at(n) is not None]
    if not names:
        return
    if driver == "redis":
        r = _redis()
        try:
            for n in names:
                found = keys[n] if keys is not None else _redis_keys(r, "{" + n + "[}:]*").get(n)
                for i in range(0, len(found or []), 500):
                    r.delete(*(found or [])[i:i + 500])
        finally:
            r.close()
        return
    conn = _sql(driver)
    try:
        for n in names:
            if driver == "mysql":
                conn.cursor().execute(f"DROP DATABASE IF EXISTS `{n}`")
            else:
                conn.execute(f'DROP SCHEMA IF EXISTS "{n}" CASCADE')
    finally:
        conn.close()


def sweep(driver: str, now: float | None = None, age: float = SWEEP_AGE) -> list[str]:
    """Drop the scratch names on `driver` made more than `age` seconds ago (left by runs
    killed before their teardown); the names dropped. Younger ones may be a run's under way."""
    now = time.time() if now is None else now
    if driver == "redis":
        r = _redis()
        try:
            keys = _redis_keys(r, "{*_t[0-9]*")
        finally:
            r.close()
        old = stale(keys, now, age)
        _drop(driver, old, keys)
        return old
    conn = _sql(driver)
    try:
        if driver == "mysql":
            cur = conn.cursor()
            cur.execute("SHOW DATABASES")
            names = [row[0] for row in cur.fetchall()]
        else:
            names = [row[0] for row in conn.execute(
                "SELECT schema_name FROM information_schema.schemata").fetchall()]
    finally:
        conn.close()
    old = stale(names, now, age)
    for n in old:
        # another run's sweep may drop it at the same moment: that is as good
        with contextlib.suppress(Exception):
            _drop(driver, [n])
    return old


def _sweep_once(driver: str) -> None:
    with _swept_lock:
        if driver in _swept:
            return
        _swept.add(driver)
    sweep(driver)


@contextlib.contextmanager
def scratch(driver: str, prefix: str) -> Iterator[str]:
    """A new name under `prefix`, made on `driver` (a MySQL database, a PostgreSQL schema in
    database postgres, a Redis key prefix "{name}") and dropped when the block ends. SQLite
    ("a file in the fixture's tmp dir") and "redis-cluster" (the session's own cluster, gone
    with it) get a name only."""
    name = new_name(prefix)
    if driver not in ("mysql", "postgres", "redis"):
        yield name
        return
    _sweep_once(driver)
    _create(driver, name)
    try:
        yield name
    finally:
        _drop(driver, [name])


@contextlib.contextmanager
def scratch_store(driver: str, prefix: str, workdir: str, cluster_url: str = ""
                  ) -> Iterator[dict[str, Any]]:
    """The `Store` block of a server on `driver` isolated under a `scratch` name (on
    "redis-cluster", the cluster at `cluster_url`); dropped when the block ends, so stop
    the server inside it."""
    with scratch(driver, prefix) as name:
        if driver == "redis-cluster":
            yield {"Driver": "redis", "Url": cluster_url, "RedisPrefix": "{" + name + "}"}
        else:
            yield store_block(driver, name, workdir)
