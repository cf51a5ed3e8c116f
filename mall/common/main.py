"""The command line of an rpc service: `python -m mall.user -f mall/etc/user.yaml`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mall.common.config import ConfigError, RpcServerConf, load
from mall.common.server import RpcServer, run_until_signal
from mall.common.telemetry import setup_logging, setup_tracing

C = TypeVar("C", bound=RpcServerConf)


def rpc_main(
    conf_cls: type[C], default: str, build: Callable[[C], Awaitable[RpcServer]],
    argv: list[str] | None = None,
) -> None:
    """Parse -f, set up logs and tracing, run the service until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("-f", "--config", default=default, help="YAML config file")
    args = parser.parse_args(argv)
    try:
        conf = load(conf_cls, args.config)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    setup_logging(conf.Name or conf_cls.__name__, conf.Log.Level)
    setup_tracing(conf.Telemetry, conf.Name)

    async def start() -> Any:
        server = await build(conf)
        return await server.start()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_until_signal(start))
