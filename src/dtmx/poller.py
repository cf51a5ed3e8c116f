"""Picks up due transactions: retries, timeouts, and everything a crashed server left.

Each claim stamps a fresh owner token and a lease on the rows atomically in the store, so any
number of servers can poll one store: a transaction is processed by one of them at a time,
and when that one dies its work is claimed again once the lease has run out.
"""

from __future__ import annotations

import asyncio
import logging

from dtmx.core.models import Transaction
from dtmx.engine import Engine
from dtmx.errors import StoreError

log = logging.getLogger("dtmx.poller")


class Poller:
    """Claims due transactions from the engine's store in batches and has the engine run
    them, at most `concurrency` at once; deletes expired finished ones on the side."""

    def __init__(
        self,
        engine: Engine,
        *,
        interval: float,
        batch: int = 16,
        concurrency: int = 64,
        finished_ttl: float = 0.0,
        expire_every: float = 60.0,
    ) -> None:
        self.engine = engine
        self.interval = interval
        self.finished_ttl = finished_ttl
        self.expire_every = expire_every
        self._next_expire = 0.0
        self.batch = batch
        self._sem = asyncio.Semaphore(concurrency)
        self._stop = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self.healthy = True

    async def poll_once(self) -> int:
        """Claim one batch and start processing it; returns how many were claimed."""
        claimed = await self.engine.claim_due(limit=self.batch)
        for trans in claimed:
            await self._sem.acquire()
            task = asyncio.create_task(self._process(trans))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return len(claimed)

    async def _process(self, trans: Transaction) -> None:
        try:
            await self.engine.resume(trans)
        except StoreError as e:
            log.warning("store error processing %s: %s", trans.gid, e)
        except Exception:
            log.exception("processing %s failed", trans.gid)
        finally:
            self._sem.release()

    async def expire_once(self) -> int:
        """Delete finished transactions older than finished_ttl, in bounded batches.

        Runs from the poll loop at most every `expire_every` seconds, off the hot path.
        """
        now = self.engine.clock.now()
        if not self.finished_ttl or now < self._next_expire:
            return 0
        self._next_expire = now + self.expire_every
        n = await self.engine.expire_finished(before=now - self.finished_ttl, limit=1000)
        if n:
            log.info("expired %d finished transactions", n)
        return n

    async def run(self) -> None:
        """Poll until `stop`: at once again after a full batch, else every `interval`;
        a store outage is logged once and retried (`healthy` says which)."""
        clock = self.engine.clock
        while not self._stop.is_set():
            try:
                n = await self.poll_once()
                await self.expire_once()
                if not self.healthy:
                    log.info("store is reachable again")
                self.healthy = True
            except StoreError as e:
                if self.healthy:
                    log.error("store unavailable, will keep retrying: %s", e)
                self.healthy = False
                n = 0
            except Exception:
                log.exception("poller iteration failed")
                n = 0
            if n < self.batch:  # a full batch means more may be due: poll again at once
                await clock.sleep(self.interval)

    async def stop(self) -> None:
        """Stop polling and cancel the runs it started (they hand their claims back)."""
        self._stop.set()
        for t in list(self._running):
            t.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
