"""Operator commands against a running server: `dtmx tx|topics|servers ...`.

Each takes `--server` (env DTMX_SERVER, default http://127.0.0.1:36789), `--token` (env
DTMX_TOKEN) and `--json`; exit codes are `client.Exit`. `dtmx barrier prune` is here too:
it talks to a business database, not to the server (see `prune`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from dtmx.ops.client import Exit, OpsClient, OpsError
from dtmx.ops.text import ago, clip, parse_since, short_time, table
from dtmx.wire import BARRIER_TABLE

COMMANDS = ("tx", "topics", "servers", "barrier")
STATUSES = ("prepared", "submitted", "aborting", "succeed", "failed")
TYPES = ("saga", "tcc", "msg", "xa", "workflow")
UNFINISHED = ("prepared", "submitted", "aborting")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=os.environ.get("DTMX_SERVER", "http://127.0.0.1:36789"),
                   help="server URL (env DTMX_SERVER; default http://127.0.0.1:36789)")
    p.add_argument("--token", default=os.environ.get("DTMX_TOKEN", ""),
                   help="API token when the server has Auth on (env DTMX_TOKEN)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--timeout", type=float, default=10.0, help=argparse.SUPPRESS)


def add_commands(sub: Any) -> None:
    """Add the operator commands to the `dtmx` parser's subcommands."""
    tx = sub.add_parser("tx", help="list, show, stop or retry transactions")
    txs = tx.add_subparsers(dest="verb", required=True)
    ls = txs.add_parser("list", help="transactions, newest first")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--type", choices=TYPES, dest="trans_type")
    ls.add_argument("--gid-prefix", default="")
    ls.add_argument("--since", help="created within a duration (2h, 7d) or after an ISO time")
    ls.add_argument("--limit", type=int, default=50)
    for name, text in (("show", "one transaction, its branches and its calls"),
                       ("stop", "force-stop: fail it now, call no further branch"),
                       ("retry", "make it due now instead of at its next retry time")):
        p = txs.add_parser(name, help=text)
        p.add_argument("gid")
        _common(p)
    _common(ls)
    topics = sub.add_parser("topics", help="list, add or remove msg topic subscribers")
    ts = topics.add_subparsers(dest="verb", required=True)
    _common(ts.add_parser("list", help="topics and their subscribers"))
    add = ts.add_parser("add", help="subscribe URL to TOPIC")
    add.add_argument("topic")
    add.add_argument("url")
    add.add_argument("--remark", default="")
    _common(add)
    rm = ts.add_parser("remove", help="unsubscribe URL from TOPIC, or delete TOPIC without URL")
    rm.add_argument("topic")
    rm.add_argument("url", nargs="?")
    _common(rm)
    _common(sub.add_parser("servers", help="the servers sharing the store, and their health"))
    _add_prune(sub)


def _add_prune(sub: Any) -> None:
    """Add `dtmx barrier prune` (its module, and the drivers, load only when it runs)."""
    barrier = sub.add_parser("barrier", help="maintain the barrier table of a business database")
    verbs = barrier.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("prune", help="delete barrier records older than a duration")
    p.add_argument("--older-than", required=True, help="e.g. 7d, 36h, 90m")
    p.add_argument("--dsn", default=os.environ.get("DTMX_BARRIER_DSN", ""),
                   help="mysql://u:p@h:3306/db, postgres://u:p@h/db, sqlite:///file, "
                        "redis://h:6379/0 (env DTMX_BARRIER_DSN)")
    p.add_argument("--table", default=BARRIER_TABLE, help=f"SQL table (default {BARRIER_TABLE})")
    p.add_argument("--match", default="*", help="Redis: SCAN pattern narrowing the keys")
    p.add_argument("--batch", type=int, default=1000, help="rows deleted per transaction")
    p.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _print(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text())


def _tx_list(c: OpsClient, a: argparse.Namespace) -> Exit:
    if a.limit < 1:
        raise OpsError(Exit.BAD_INPUT, "--limit must be >= 1")
    since = None
    if a.since:
        try:
            since = int(parse_since(a.since, time.time()) * 1000)
        except ValueError as e:
            raise OpsError(Exit.BAD_INPUT, str(e)) from None
    rows = c.transactions(status=a.status or "", trans_type=a.trans_type or "",
                          gid_prefix=a.gid_prefix, since_ms=since, limit=a.limit)
    _print(a, rows, lambda: table(
        ["GID", "TYPE", "STATUS", "CREATED", "NEXT RETRY", "RETRIES", "REASON"],
        [[t["gid"], t.get("trans_type"), t.get("status"), short_time(t.get("create_time")),
          short_time(t.get("next_cron_time")) if t.get("status") in UNFINISHED else "",
          t.get("retry_count", 0), clip(t.get("rollback_reason", ""), 40)] for t in rows]))
    return Exit.OK


def _tx_text(got: dict[str, Any]) -> str:
    t = got["transaction"]
    keys = ("gid", "trans_type", "status", "protocol", "create_time", "update_time",
            "finish_time", "rollback_time", "next_cron_time", "next_cron_interval",
            "retry_count", "retry_limit", "rollback_reason", "result", "owner", "custom_data")
    head = [(k, short_time(t[k]) if k.endswith("_time") else t[k]) for k in keys if t.get(k)]
    width = max(len(k) for k, _ in head)
    lines = [f"{k.ljust(width)}  {v}" for k, v in head]
    branches = table(
        ["BRANCH", "OP", "STATUS", "URL", "UPDATED", "PAYLOAD"],
        [[b.get("branch_id"), b.get("op"), b.get("status"), b.get("url", ""),
          short_time(b.get("update_time")), clip(b.get("data", ""), 40)]
         for b in got.get("branches") or []])
    calls = table(
        ["BRANCH", "OP", "ATTEMPT", "STARTED", "RESULT", "DURATION", "NEXT RETRY", "REASON"],
        [[c.get("branch_id"), c.get("op"), c.get("attempt"), short_time(c.get("start_time")),
          c.get("result"), f"{c.get('duration_ms', 0):.0f} ms",
          short_time(c.get("next_retry_time")), clip(c.get("reason", ""), 50)]
         for c in got.get("calls") or []])
    return "\n".join([*lines, "", branches, "", "Calls (oldest first)", calls])


def _tx(c: OpsClient, a: argparse.Namespace) -> Exit:
    if a.verb == "list":
        return _tx_list(c, a)
    if a.verb == "show":
        got = c.transaction(a.gid)
        _print(a, got, lambda: _tx_text(got))
    elif a.verb == "stop":
        out = c.force_stop(a.gid)
        _print(a, out, lambda: f"{a.gid}: force-stopped (failed; no further branch is called)")
    else:
        out = c.retry_now(a.gid)
        _print(a, out, lambda: f"{a.gid}: due now; the next poll runs it")
    return Exit.OK


def _topics(c: OpsClient, a: argparse.Namespace) -> Exit:
    if a.verb == "list":
        topics = c.topics()
        rows = [[t["topic"], s.get("url", ""), s.get("remark", "")]
                for t in topics for s in t["subscribers"] or [{}]]
        _print(a, topics, lambda: table(["TOPIC", "URL", "REMARK"], rows))
    elif a.verb == "add":
        out = c.subscribe(a.topic, a.url, a.remark)
        _print(a, out, lambda: f"{a.url} subscribes to {a.topic}")
    elif a.url:
        out = c.unsubscribe(a.topic, a.url)
        _print(a, out, lambda: f"{a.url} no longer subscribes to {a.topic}")
    else:
        out = c.delete_topic(a.topic)
        _print(a, out, lambda: f"topic {a.topic} deleted")
    return Exit.OK


def _servers(c: OpsClient, a: argparse.Namespace) -> Exit:
    rows = c.servers()
    _print(a, rows, lambda: table(
        ["SERVER", "HEALTH", "VERSION", "HTTP", "GRPC", "STARTED", "LAST BEAT", "RUNS"],
        [[s["id"], s.get("health"), s.get("version"), s.get("http_port"),
          s.get("grpc_port") or "off", short_time(s.get("started")),
          f"{ago(float(s.get('age', 0)))} ago", s.get("runs_in_flight", 0)] for s in rows]))
    return Exit.OK


def run(args: argparse.Namespace) -> int:
    """Run a parsed operator command; returns its exit code."""
    if args.command == "barrier":
        from dtmx.ops import prune

        return prune.run(args)
    client = OpsClient(args.server, args.token, timeout=args.timeout)
    handler = {"tx": _tx, "topics": _topics, "servers": _servers}[args.command]
    try:
        return int(handler(client, args))
    except OpsError as e:
        print(f"dtmx {args.command}: {e.message}", file=sys.stderr)
        return int(e.code)
