"""`dtmx barrier prune` on every barrier backend: MySQL, PostgreSQL, SQLite and Redis.

Rows are dated by the database's own clock (inserted as "10 days ago" or "now"), then the
real command runs in a subprocess, first with --dry-run (nothing changes), then for real.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtmx.client.barrier import ddl
from tests.support.services import mysql_dsn, pg_dsn, redis_url
from tests.support.util import eventually

OLD, NEW = 5, 3


def prune(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dtmx", "barrier", "prune", "--dsn", dsn, *args],
        capture_output=True, text=True, timeout=60,
    )


def result(r: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


class SqlCase:
    """A fresh barrier table on one backend, with its DSN and a DB-API connection."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        name = f"prune_{uuid.uuid4().hex[:8]}"
        if kind == "sqlite":
            path = tmp / f"{name}.db"
            self.dsn, self.table = f"sqlite:///{path}", "barrier"
            self.conn: Any = sqlite3.connect(path)
            self.ago = "datetime('now', '-10 days')"
        elif kind == "mysql":
            import pymysql

            self.dsn, self.table = mysql_dsn("dtm_barrier"), f"dtm_barrier.{name}"
            self.conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                                        autocommit=True)
            self.ago = "NOW() - INTERVAL 10 DAY"
        else:
            import psycopg

            self.dsn, self.table = pg_dsn(), f"dtm_barrier.{name}"
            self.conn = psycopg.connect(pg_dsn(), autocommit=True)
            self.ago = "now() - interval '10 days'"
        for stmt in ddl(kind, self.table):
            self.execute(stmt)

    def execute(self, sql: str, *args: Any) -> Any:
        cur = self.conn.cursor()
        mark = "?" if self.kind == "sqlite" else "%s"
        cur.execute(sql.replace("?", mark), args)
        if self.kind == "sqlite":
            self.conn.commit()
        return cur

    def insert(self, gid: str, created: str | None) -> None:
        cols = "trans_type, gid, branch_id, op, barrier_id, reason"
        extra = ", create_time" if created else ""
        value = f", {created}" if created else ""
        self.execute(f"INSERT INTO {self.table}({cols}{extra}) "
                     f"VALUES ('saga', ?, '01', 'action', '01', 'action'{value})", gid)

    def gids(self) -> set[str]:
        return {r[0] for r in self.execute(f"SELECT gid FROM {self.table}").fetchall()}

    def close(self) -> None:
        if self.kind != "sqlite":
            self.execute(f"DROP TABLE {self.table}")
        self.conn.close()


@pytest.fixture(params=["sqlite", "mysql", "postgres"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlCase]:
    c = SqlCase(request.param, tmp_path)
    yield c
    c.close()


def test_prune_sql(case: SqlCase) -> None:
    now = "CURRENT_TIMESTAMP"
    for i in range(OLD):
        case.insert(f"old-{i}", case.ago)
    for i in range(NEW):
        case.insert(f"new-{i}", now)
    table = [] if case.kind == "sqlite" else ["--table", case.table]  # sqlite: the default name
    dry = result(prune(case.dsn, *table, "--older-than", "7d", "--dry-run", "--json"))
    assert (dry["deleted"], dry["dry_run"]) == (OLD, True)
    assert len(case.gids()) == OLD + NEW
    done = result(prune(case.dsn, *table, "--older-than", "7d", "--batch", "2", "--json"))
    assert (done["deleted"], done["dry_run"]) == (OLD, False)
    assert case.gids() == {f"new-{i}" for i in range(NEW)}
    text = prune(case.dsn, *table, "--older-than", "7d")
    assert text.returncode == 0 and text.stdout.startswith("deleted 0 barrier rows older than 7d")


def test_prune_postgres_stamps_undated_rows() -> None:
    """DTM's PostgreSQL table leaves create_time NULL: such rows are stamped, pruned later."""
    case = SqlCase("postgres", Path("."))
    try:
        case.insert("undated", None)
        dry = result(prune(case.dsn, "--table", case.table, "--older-than", "1d", "--dry-run",
                           "--json"))
        assert (dry["deleted"], dry["undated"]) == (0, 1)
        assert case.execute(f"SELECT create_time FROM {case.table}").fetchone()[0] is None
        done = result(prune(case.dsn, "--table", case.table, "--older-than", "1d", "--json"))
        assert (done["deleted"], done["undated"]) == (0, 1)
        assert case.execute(f"SELECT create_time FROM {case.table}").fetchone()[0] is not None
        assert case.gids() == {"undated"}
    finally:
        case.close()


def test_prune_redis() -> None:
    import redis

    # a database of its own: a SCAN of the shared one (other suites' keys) would take seconds
    url = redis_url().rsplit("/", 1)[0] + "/9"
    r = redis.Redis.from_url(url)
    tag = f"prune{uuid.uuid4().hex[:8]}"
    old = [f"{tag}g{i}-01-action-01" for i in range(OLD)]
    try:
        for k in old:
            r.set(k, "op")
        r.set(f"{tag}-not-a-barrier", "x")  # no branch op in it: never touched
        r.hset(f"{tag}g9-01-try-01", "a", "1")  # not a string: never touched
        args = ["--match", f"{tag}*", "--older-than", "2s"]

        # wait on Redis itself (OBJECT IDLETIME does not touch the keys), then one dry run
        eventually(lambda: all(r.object("idletime", k) >= 2 for k in old), timeout=10,
                   interval=0.2)
        assert result(prune(url, *args, "--dry-run", "--json"))["deleted"] == OLD
        assert all(r.exists(k) for k in old)  # the dry run deleted nothing
        fresh = [f"{tag}g{i}-01-cancel-01" for i in range(NEW)]
        for k in fresh:
            r.set(k, "rollback")
        done = result(prune(url, *args, "--json"))
        assert (done["deleted"], done["backend"]) == (OLD, "redis")
        left = {k.decode() for k in r.scan_iter(match=f"{tag}*")}
        assert left == {*fresh, f"{tag}-not-a-barrier", f"{tag}g9-01-try-01"}
    finally:
        keys = list(r.scan_iter(match=f"{tag}*"))
        if keys:
            r.delete(*keys)
        r.close()


@pytest.mark.parametrize("args, message", [
    (["--older-than", "soon"], "invalid duration"),
    (["--older-than", "0s"], "must be > 0"),
    (["--older-than", "7d", "--table", "x; DROP TABLE y"], "invalid barrier table name"),
])
def test_prune_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    dsn = f"sqlite:///{tmp_path / 'b.db'}"
    sqlite3.connect(tmp_path / "b.db").close()
    r = prune(dsn, *args)
    assert r.returncode == 2 and message in r.stderr


def test_prune_unreachable_database_exits_5() -> None:
    r = prune("mysql://root@127.0.0.1:1/dtm_barrier", "--older-than", "7d")
    assert r.returncode == 5 and "OperationalError" in r.stderr


