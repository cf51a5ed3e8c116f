"""`python -m mall.userapi -f mall/etc/userapi-api.yaml`: run user-api."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from mall.common.config import ConfigError, UserApiConf, load
from mall.common.server import run_until_signal
from mall.common.telemetry import setup_logging, setup_tracing
from mall.userapi.app import build


def main(argv: list[str] | None = None) -> None:
    """Parse -f, set up logs and tracing, serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("-f", "--config", default="mall/etc/userapi-api.yaml")
    args = parser.parse_args(argv)
    try:
        conf = load(UserApiConf, args.config)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    setup_logging(conf.Name, conf.Log.Level)
    setup_tracing(conf.Telemetry, conf.Name)

    async def start() -> Any:
        return await build(conf).start()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_until_signal(start))


if __name__ == "__main__":
    main()
