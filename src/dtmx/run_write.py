"""How a run writes: its buffered branch results with each change, compare-and-set on
(status, owner), and a plain sequential saga's batches in the background.

A batch written in the background (`Writes._write_behind`) lets the run call its next
actions while the store works: the results in it count as unwritten until the write
answers (dtmx.core.saga says why that is safe), one such write is under way at a time, and
every later write, and the run's next step once the write answered, waits for it first,
so a refused write stops the run before any call made after it learned so.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from dtmx.core.models import BranchUpdate, CallRecord, Change, Status, Transaction
from dtmx.core.timing import Timing, base_interval, lease
from dtmx.stores.base import Store
from dtmx.telemetry.observer import Observer

log = logging.getLogger("dtmx.engine")


class Writes:
    """The write side of a run: the claim (trans, owner) and the results not yet written."""

    __slots__ = ("_behind", "calls", "keep_calls", "observer", "owner", "pending",
                 "reset_interval", "store", "timing", "trans")

    def __init__(self, *, store: Store, timing: Timing, observer: Observer,
                 trans: Transaction, owner: str, keep_calls: int) -> None:
        self.store, self.timing, self.observer = store, timing, observer
        self.trans = trans
        self.owner = owner
        self.pending: list[BranchUpdate] = []
        #: calls made and not yet written to the history (they go with the next write)
        self.calls: list[CallRecord] = []
        self.keep_calls = keep_calls
        self.reset_interval = False  # progress was made: the backoff starts again from the base
        #: a batch of results being written while the next calls go on (see _write_behind)
        self._behind: asyncio.Future[bool] | None = None

    def _settle(self) -> None:
        """Bring `calls` up to date before a write (a run keeps some records late)."""

    def _lease(self) -> float:
        return lease(self.trans, self.timing)

    def _base_interval(self) -> float:
        return base_interval(self.trans, self.timing)

    async def _write(self, now: float, change: Change) -> bool:
        """Write `change` plus the buffered branch results, compare-and-set on our claim
        (once the batch being written in the background, if any, is written)."""
        if self._behind is not None and not await self._caught_up():
            return False
        self._settle()
        change = replace(change, branches=tuple(self.pending), calls=tuple(self.calls),
                         keep_calls=self.keep_calls)
        reset = self.reset_interval
        if reset and change.next_cron_interval is None:
            change = replace(change, next_cron_interval=self._base_interval())
        if not await self._update(now, self.trans.status, change, reset):
            return False
        self.pending.clear()
        self.calls.clear()
        self.reset_interval = False
        return True

    def _write_behind(self, now: float) -> None:
        """Start writing the buffered results and go on without waiting: the next calls
        are made while the store works (a plain sequential saga's batches, see
        Call.unwritten). The next write of any kind, and the next step once it is done,
        waits for it first (`_caught_up`), so a refused write stops the run at once."""
        self._settle()
        reset = self.reset_interval
        change = Change(branches=tuple(self.pending), calls=tuple(self.calls),
                        keep_calls=self.keep_calls,
                        next_cron_interval=self._base_interval() if reset else None)
        self.pending.clear()
        self.calls.clear()
        self.reset_interval = False
        self._behind = asyncio.ensure_future(
            self._update(now, self.trans.status, change, reset))

    async def _caught_up(self) -> bool:
        """Wait for the write started by `_write_behind`; whether it was made. A run
        cancelled meanwhile (a shutdown) leaves that write going, still the one to wait
        for: the hand-back write (`Run._release`) would otherwise store later results over
        a hole, and a sequential saga's stored successes must stay a prefix."""
        behind = self._behind
        if behind is None:
            return True
        made = await asyncio.shield(behind)
        self._behind = None
        return made

    async def _update(self, now: float, status: Status, change: Change, reset: bool) -> bool:
        ok = await self.store.update(
            gid=self.trans.gid,
            now=now,
            expect_status=status,
            expect_owner=self.owner,
            change=change,
        )
        if not ok:
            log.info("%s changed under us (status or owner); stopping this run", self.trans.gid)
            self.observer.lost_claim(self.trans)
            return False
        self.trans.update_time = now
        if change.next_cron_time is not None:
            self.trans.next_cron_time = change.next_cron_time
        if reset:
            self.trans.next_cron_interval = self._base_interval()
        return True

    def _forget_behind(self) -> None:
        """The run ends with a background write still under way (after an error): it ends
        on its own, and its error is not worth a warning of its own."""
        if self._behind is not None:
            self._behind.add_done_callback(_retrieved)
            self._behind = None


def _retrieved(behind: asyncio.Future[bool]) -> None:
    if not behind.cancelled():
        behind.exception()
