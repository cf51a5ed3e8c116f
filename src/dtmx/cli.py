"""The `dtmx` command: serve, migrate, version, and the operator commands (`dtmx.ops`).

Exit codes: 0 ok, 2 bad configuration, a missing extra or store unreachable at start
(nothing was served).

`pip install dtmx` installs the SDK only, so this module imports nothing of the server at
import time: `--help` and `--version` work everywhere, and `serve`/`migrate` without the
server's dependencies say which extra to install.

The operator commands (`dtmx.ops`) exit with the codes of `dtmx.ops.client.Exit`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from dtmx import __version__
from dtmx.errors import ConfigError, StoreError
from dtmx.ops import cli as ops_cli

if TYPE_CHECKING:
    from dtmx.settings import Settings

log = logging.getLogger("dtmx")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dtmx", description="dtmx transaction manager")
    p.add_argument("-V", "--version", action="version", version=f"dtmx {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("-c", "--config", default=os.environ.get("DTMX_CONFIG"),
                       help="YAML config (DTM's keys); env: DTMX_CONFIG")
    serve.add_argument("--workers", type=int, default=None,
                       help="server processes sharing the ports (default: Workers, 1)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    mig = sub.add_parser("migrate", help="create or upgrade the store's schema")
    mig.add_argument("-c", "--config", default=os.environ.get("DTMX_CONFIG"))
    sub.add_parser("version", help="print the version")
    ops_cli.add_commands(sub)
    return p


def _setup_logging(settings: Settings) -> None:
    from dtmx.settings import log_level
    from dtmx.telemetry import logs
    from dtmx.telemetry.wiring import tracing_enabled

    logs.setup(
        level=log_level(settings), fmt=settings.Log.Format, outputs=settings.Log.Outputs,
        trace_id=logs.otel_trace_id if tracing_enabled(settings) else None,
    )


def _load(config: str | None) -> Settings:
    """Settings, with the warnings of loading them held back until logging is set up, so
    they come out through the same handlers and format as every other line."""
    from dtmx.settings import load
    from dtmx.telemetry.logs import Buffered

    held = Buffered()
    root = logging.getLogger()
    root.addHandler(held)
    try:
        settings = load(config)
    finally:
        root.removeHandler(held)
    _setup_logging(settings)
    held.replay()
    return settings


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


#: The top-level module a missing import names -> the extra that installs it.
_EXTRA_OF = {
    "yaml": "server",
    "httptools": "server",
    "prometheus_client": "server",
    "asyncmy": "mysql",
    "asyncpg": "postgres",
    "aetcd": "etcd",
    "grpc": "grpc",
    "google": "grpc",
    "opentelemetry": "tracing",
}


def missing_extra(e: ModuleNotFoundError) -> str:
    """The one-line advice for a dependency that is not installed."""
    top = (e.name or "").split(".")[0]
    extra = _EXTRA_OF.get(top, "all")
    return f"dtmx: {top or 'a dependency'} is not installed: pip install 'dtmx[{extra}]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv); returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"dtmx {__version__}")
        return 0
    if args.command in ops_cli.COMMANDS:
        return ops_cli.run(args)
    try:
        return _server_command(args)
    except ModuleNotFoundError as e:
        print(missing_extra(e), file=sys.stderr)
        return 2


def _server_command(args: argparse.Namespace) -> int:
    try:
        settings = _load(args.config)
    except ConfigError as e:
        print(f"dtmx: config error: {e.message}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return _migrate(settings)
    workers = args.workers or settings.Workers
    if workers > 1 and not args.reuse_port:
        return _supervise(args.config, workers)
    from dtmx.server import serve

    try:
        _run(serve(settings, reuse_port=args.reuse_port))
    except StoreError as e:
        print(f"dtmx: store unavailable: {e.message}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"dtmx: config error: {e.message}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"dtmx: cannot listen: {e}", file=sys.stderr)
        return 2
    return 0


def _migrate(settings: Settings) -> int:
    from dtmx.stores import make_store
    from dtmx.stores.sql import SqlStore, migrate

    async def go() -> None:
        store = make_store(settings)
        if isinstance(store, SqlStore):
            applied = await migrate(store)
            print(f"dtmx: applied schema versions {applied}" if applied else
                  "dtmx: nothing to apply")
        else:  # Redis: move data of the single-slot layout into partitions, if any
            from dtmx.stores.redis_migrate import migrate_layout
            from dtmx.stores.redis_store import RedisStore

            assert isinstance(store, RedisStore)
            try:
                moved = await migrate_layout(store)
            finally:
                await store.close()
            print(f"dtmx: moved {moved} transactions into {store.layout.partitions} "
                  "partitions" if moved else "dtmx: nothing to move")

    try:
        asyncio.run(go())
    except StoreError as e:
        print(f"dtmx: migrate failed: {e.message}", file=sys.stderr)
        return 2
    print("dtmx: schema is up to date")
    return 0


def _supervise(config: str | None, workers: int) -> int:
    """Run `workers` server processes on the same ports (SO_REUSEPORT), one per core."""
    cmd = [sys.executable, "-m", "dtmx", "serve", "--workers", "1", "--reuse-port"]
    if config:
        cmd += ["-c", config]
    procs = [subprocess.Popen(cmd) for _ in range(workers)]

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)  # each worker reloads its API tokens
    codes = [p.wait() for p in procs]
    return max(codes)
