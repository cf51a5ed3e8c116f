"""An asyncio event loop on virtual time: runs as fast as the CPU allows, the same way
every time.

asyncio itself is deterministic (a FIFO ready queue, a heap of timers) once nothing comes
from outside; what comes from outside is time and I/O. Here `time()` is a number this loop
owns, and the selector, asked to wait `timeout` seconds for I/O that can never come, moves
that number forward instead of sleeping. No file descriptor is ever opened.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is set: the simulation can never move again."""


class _TimeSelector(selectors.BaseSelector):
    """A selector with nothing to select: waiting advances the loop's virtual time."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._loop = loop
        self._map: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        raise NotImplementedError("no I/O in a simulation")

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        raise KeyError(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Deadlock("no task can run and no timer is set")
        if timeout > 0:
            # jump exactly to the next timer (adding a float difference could land a hair
            # before it, and the loop would spin)
            scheduled = self._loop._scheduled  # type: ignore[attr-defined]
            target = self._loop.vt + timeout
            if scheduled:
                target = max(target, scheduled[0]._when)
            self._loop.vt = target
        return []

    def get_map(self) -> dict[Any, selectors.SelectorKey]:
        return self._map

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    """A loop whose clock starts at 0 and moves only when every task waits on a timer."""

    def __init__(self) -> None:
        super().__init__()
        self.vt = 0.0
        self._selector = _TimeSelector(self)
        # Tasks of crashed nodes stay pending forever and are dropped with the loop; that
        # is the point, not an error worth a log line.
        self.set_exception_handler(lambda loop, context: None)

    def time(self) -> float:
        return self.vt

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass
