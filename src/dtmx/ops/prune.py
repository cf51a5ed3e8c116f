"""`dtmx barrier prune`: delete old barrier records from a business database.

The barrier table only grows (one row per branch op); once a global transaction is long
finished its rows protect nothing. SQL backends delete rows whose `create_time` is older
than `--older-than`, measured by the database's own clock, in batches of `--batch` rows per
transaction, so the table is never locked for long. Redis keeps no creation time: a barrier
key is pruned once it has been idle (neither read nor written) for longer than
`--older-than`; only keys shaped like DTM's barrier keys (`gid-branch-op-barrier`, op one of
the branch ops) are considered.

DTM's PostgreSQL table leaves `create_time` NULL (no default). Such rows cannot be dated: a
prune stamps them with the current time, so they are pruned `--older-than` later.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from dtmx.client.barrier._sql import Dialect, split_table
from dtmx.ops.client import Exit
from dtmx.ops.text import parse_duration
from dtmx.wire import Op

_OPS = "|".join(re.escape(o.value) for o in Op)
#: DTM's Redis barrier key: <gid>-<branch_id>-<op>-<barrier_id>.
REDIS_KEY = re.compile(rf"^.+-.+-(?:{_OPS})-[0-9]+$")
#: Deletes a key only if it is still idle for `ARGV[1]` seconds (it may have been used since).
_DEL_IF_IDLE = """
local n = 0
for _, k in ipairs(KEYS) do
  local idle = redis.call('OBJECT', 'IDLETIME', k)
  if idle and idle >= tonumber(ARGV[1]) then n = n + redis.call('DEL', k) end
end
return n
"""


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What a prune did (or, with dry_run, would do)."""

    backend: str
    table: str
    older_than: float
    dry_run: bool
    deleted: int  # rows or keys deleted; with dry_run, how many would be
    undated: int = 0  # PostgreSQL rows with no create_time (stamped unless dry_run)


def _connect(dsn: str) -> tuple[Dialect, Any]:
    u = urlparse(dsn)
    scheme = u.scheme.split("+")[0]
    if scheme == "sqlite":
        import sqlite3

        path = unquote(u.netloc + u.path) if u.netloc else unquote(u.path)
        if not path or path == "/":
            raise ValueError("sqlite DSN needs a file: sqlite:///path/to/barrier.db")
        if not os.path.exists(path):
            raise ValueError(f"no such SQLite file: {path}")
        return Dialect.SQLITE, sqlite3.connect(path, timeout=30)
    if scheme == "mysql":
        import pymysql

        return Dialect.MYSQL, pymysql.connect(
            host=u.hostname or "127.0.0.1", port=u.port or 3306, user=unquote(u.username or ""),
            password=unquote(u.password or ""), database=u.path.lstrip("/") or None,
            autocommit=False,
        )
    if scheme in ("postgres", "postgresql"):
        import psycopg

        return Dialect.POSTGRES, psycopg.connect(dsn.replace(f"{u.scheme}://", "postgresql://", 1))
    raise ValueError(f"unsupported DSN scheme {u.scheme!r}: use mysql, postgres, sqlite or redis")


def _sql_statements(dialect: Dialect, table: str) -> tuple[str, str, Any]:
    """(count, delete-one-batch, age parameter maker) for rows older than an age."""
    if dialect is Dialect.MYSQL:
        cond = "create_time < NOW() - INTERVAL %s SECOND"
        return (f"SELECT COUNT(*) FROM {table} WHERE {cond}",
                f"DELETE FROM {table} WHERE {cond} ORDER BY id LIMIT %s", lambda s: int(s))
    if dialect is Dialect.POSTGRES:
        cond = "create_time < now() - %s * interval '1 second'"
        return (f"SELECT COUNT(*) FROM {table} WHERE {cond}",
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {cond} LIMIT %s)",
                lambda s: float(s))
    cond = "create_time < datetime('now', ?)"
    return (f"SELECT COUNT(*) FROM {table} WHERE {cond}",
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {cond} LIMIT ?)",
            lambda s: f"-{int(s)} seconds")


def prune_sql(dsn: str, *, table: str, older_than: float, dry_run: bool,
              batch: int = 1000) -> PruneResult:
    """Delete (or count) barrier rows created more than `older_than` seconds ago."""
    _, name = split_table(table)
    dialect, conn = _connect(dsn)
    # SQLite: the DSN's file is the database holding the table (an attached one, in the
    # service, when the table name is qualified), so the qualifier is dropped here.
    target = name if dialect is Dialect.SQLITE else table
    count_sql, delete_sql, age = _sql_statements(dialect, target)
    try:
        cur = conn.cursor()
        undated = 0
        if dialect is Dialect.POSTGRES:
            cur.execute(f"SELECT COUNT(*) FROM {target} WHERE create_time IS NULL")
            undated = int(cur.fetchone()[0])
            if undated and not dry_run:
                cur.execute(f"UPDATE {target} SET create_time = now() WHERE create_time IS NULL")
                conn.commit()
        if dry_run:
            cur.execute(count_sql, (age(older_than),))
            deleted = int(cur.fetchone()[0])
        else:
            deleted = 0
            while True:
                cur.execute(delete_sql, (age(older_than), batch))
                conn.commit()
                deleted += max(cur.rowcount, 0)
                if cur.rowcount < batch:
                    break
    finally:
        conn.close()
    return PruneResult(dialect.value, target, older_than, dry_run, deleted, undated)


def prune_redis(dsn: str, *, older_than: float, dry_run: bool, match: str = "*",
                batch: int = 500) -> PruneResult:
    """Delete (or count) barrier keys idle for more than `older_than` seconds."""
    import redis

    r = redis.Redis.from_url(dsn)
    idle_min = int(older_than)
    delete = r.register_script(_DEL_IF_IDLE)
    deleted = 0
    try:
        todo: list[bytes] = []
        for key in r.scan_iter(match=match, count=batch):
            if not REDIS_KEY.match(key.decode(errors="replace")):
                continue
            # TYPE and OBJECT IDLETIME do not touch the key: a dry run changes nothing
            pipe = r.pipeline(transaction=False)
            pipe.type(key)
            pipe.object("idletime", key)
            kind, idle = pipe.execute()
            if kind in (b"string", "string") and idle is not None and idle >= idle_min:
                todo.append(key)
            if len(todo) >= batch:
                deleted += len(todo) if dry_run else int(delete(keys=todo, args=[idle_min]))
                todo = []
        if todo:
            deleted += len(todo) if dry_run else int(delete(keys=todo, args=[idle_min]))
    finally:
        r.close()
    return PruneResult("redis", match, older_than, dry_run, deleted)


def run(args: argparse.Namespace) -> int:
    """Run `dtmx barrier prune`; returns the exit code."""
    try:
        older = parse_duration(args.older_than)
        if older <= 0 or args.batch < 1:
            raise ValueError("--older-than must be > 0 and --batch >= 1")
        if not args.dsn:
            raise ValueError("--dsn (or DTMX_BARRIER_DSN) is required")
        if urlparse(args.dsn).scheme == "redis":
            res = prune_redis(args.dsn, older_than=older, dry_run=args.dry_run, match=args.match)
        else:
            res = prune_sql(args.dsn, table=args.table, older_than=older, dry_run=args.dry_run,
                            batch=args.batch)
    except ValueError as e:
        print(f"dtmx barrier prune: {e}", file=sys.stderr)
        return int(Exit.BAD_INPUT)
    except ImportError as e:
        print(f"dtmx barrier prune: driver missing ({e.name}): pip install 'dtmx[barrier]'",
              file=sys.stderr)
        return int(Exit.BAD_INPUT)
    except Exception as e:  # driver errors: unreachable database, missing table, no rights
        print(f"dtmx barrier prune: {type(e).__name__}: {_first_line(e)}", file=sys.stderr)
        return int(Exit.UNAVAILABLE)
    if args.json:
        print(json.dumps(asdict(res), sort_keys=True))
        return 0
    verb = "would delete" if res.dry_run else "deleted"
    unit = "keys" if res.backend == "redis" else "rows"
    print(f"{verb} {res.deleted} barrier {unit} older than {args.older_than} "
          f"({res.backend} {res.table})")
    if res.undated:
        done = "would stamp" if res.dry_run else "stamped"
        print(f"{done} {res.undated} rows without create_time with the current time "
              f"(pruned after {args.older_than})")
    return 0


def _first_line(e: Exception) -> str:
    # driver messages never carry the DSN's password, but keep them to one line
    return str(e).splitlines()[0][:300] if str(e) else ""
