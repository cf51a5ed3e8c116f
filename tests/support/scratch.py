"""Scratch stores: a MySQL database, a PostgreSQL schema or a Redis key prefix that one
fixture names for itself (its store creates it) and drops when it ends, so test runs leave
nothing behind.

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
    "dtmx_st", "dtmx_ms", "dtmx_pt", "dtmx_store", "dtmx_embed", "dtmx_fault", "xa", "jrpc",
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


def sql_run(driver: str, *statements: str) -> list[tuple[Any, ...]]:
    """Run `statements` on the MySQL or PostgreSQL server (no database chosen; PostgreSQL's
    `postgres`), locks waited for _LOCK_WAIT seconds at most; the last one's rows."""
    rows: list[tuple[Any, ...]] = []
    if driver == "mysql":
        import pymysql

        conn: Any = pymysql.connect(**mysql().kwargs(), autocommit=True)
        first = f"SET SESSION lock_wait_timeout = {_LOCK_WAIT}"
    else:
        import psycopg

        conn = psycopg.connect(**postgres().kwargs("postgres", db_key="dbname"),
                               autocommit=True)
        first = f"SET lock_timeout = '{_LOCK_WAIT}s'"
    try:
        cur = conn.cursor()
        for sql in (first, *statements):
            cur.execute(sql)
            rows = list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()
    return rows


def sql_ddl(driver: str, verb: str, name: str) -> str:
    """The CREATE or DROP (`verb`) of database `name` (MySQL) or schema `name` (PostgreSQL)."""
    what = "DATABASE" if driver == "mysql" else "SCHEMA"
    quoted = f"`{name}`" if driver == "mysql" else f'"{name}"'
    if verb == "CREATE":
        return f"CREATE {what} {quoted}"
    return f"DROP {what} IF EXISTS {quoted}" + (" CASCADE" if driver == "postgres" else "")


def existing(driver: str) -> list[str]:
    """The databases (MySQL), schemas (PostgreSQL) or key tags (Redis) there are now."""
    if driver == "redis":
        return list(redis_keys("{*"))
    query = ("SHOW DATABASES" if driver == "mysql"
             else "SELECT schema_name FROM information_schema.schemata")
    return [row[0] for row in sql_run(driver, query)]


def redis_client() -> Any:
    """A client of the test Redis (tests.support.services.redis_url)."""
    import redis

    return redis.Redis.from_url(redis_url())


def redis_keys(match: str) -> dict[str, list[bytes]]:
    """Keys matching `match`, grouped by the name in their hash tag ({name} or {name:N})."""
    out: dict[str, list[bytes]] = {}
    r = redis_client()
    try:
        for k in r.scan_iter(match=match, count=1000):
            m = _REDIS_TAG.match(k.decode(errors="replace"))
            if m:
                out.setdefault(m.group(1), []).append(k)
    finally:
        r.close()
    return out


def _drop(driver: str, names: list[str], keys: dict[str, list[bytes]] | None = None) -> None:
    """Drop `names` (scratch names only) on `driver`; for Redis, `keys` if already found."""
    names = [n for n in names if made_at(n) is not None]
    if driver != "redis":
        if names:
            sql_run(driver, *(sql_ddl(driver, "DROP", n) for n in names))
        return
    found = [k for n in names
             for k in (keys if keys is not None else redis_keys("{" + n + "[}:]*")).get(n, [])]
    if found:
        r = redis_client()
        try:
            for i in range(0, len(found), 500):
                r.delete(*found[i:i + 500])
        finally:
            r.close()


def sweep(driver: str, now: float | None = None, age: float = SWEEP_AGE) -> list[str]:
    """Drop the scratch names on `driver` made more than `age` seconds ago (left by runs
    killed before their teardown); the names dropped. Younger ones may be a run's under way."""
    now = time.time() if now is None else now
    if driver == "redis":
        keys = redis_keys("{*_t[0-9]*")
        old = stale(keys, now, age)
        _drop(driver, old, keys)
        return old
    old = stale(existing(driver), now, age)
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
    """A new name under `prefix` for `driver`, dropped when the block ends: a MySQL database,
    a PostgreSQL schema in database postgres, a Redis key prefix "{name}". The store under
    test creates it, as it would a user's (with its own character set and collation).
    SQLite (a file in the fixture's tmp dir) and "redis-cluster" (the session's own cluster,
    gone with it) get a name only."""
    name = new_name(prefix)
    if driver not in ("mysql", "postgres", "redis"):
        yield name
        return
    _sweep_once(driver)
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
