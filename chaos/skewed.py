"""A dtmx server whose clock can be moved while it runs, through the injected `Clock`.

dtmx has no production switch for its clock (by design), but `dtmx.server.Server` takes a
`Clock`: this launcher gives it one that adds the offset (seconds) written in a file, so the
harness can make one server's clock jump forward or back mid-run.

    python -m chaos.skewed server.yml offset-file
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path

from dtmx.clock import SystemClock


class FileSkewClock(SystemClock):
    """The system clock plus the offset in `path`, re-read every 0.1 s of real time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0.0
        self._read_at = 0.0

    def now(self) -> float:
        real = time.time()
        if real - self._read_at > 0.1:
            self._read_at = real
            with contextlib.suppress(OSError, ValueError):
                self.offset = float(self.path.read_text() or 0)
        return real + self.offset


async def _main(conf: str, skew: str) -> None:
    from dtmx.server import Server
    from dtmx.settings import load

    logging.basicConfig(level=logging.WARNING)
    server = Server(load(conf), clock=FileSkewClock(Path(skew)))
    await server.start(reuse_port=True)  # the harness holds the port between restarts
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2]))
