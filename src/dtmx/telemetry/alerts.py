"""The alert webhook: DTM's `AlertWebHook` / `AlertRetryLimit`, plus `failed` and `stuck`.

DTM POSTs `{"gid", "status", "branch", "error", "retry_count"}` whenever a branch call errors
and the transaction's retry count (log2 of its backed-off interval over the base interval)
has reached AlertRetryLimit. We send the same body, with a `kind` field added
(`retry`, `failed` or `stuck`), but once per transaction and kind (per server process),
not on every further error.

`notify` never blocks and never raises: notifications go through a bounded queue to one
sender task, which retries a failed POST with doubling backoff and then gives up with a log
line. The engine is never held up by a slow or dead webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlparse

import aiohttp

from dtmx.clock import Clock
from dtmx.core.models import Status, Transaction

log = logging.getLogger("dtmx.alerts")

_QUEUE_MAX = 1000
_SENT_MAX = 100_000  # (gid, kind) pairs remembered, oldest forgotten first


class AlertKind(StrEnum):
    """What an alert is about; `AlertKinds` in the config chooses which are sent."""

    RETRY = "retry"  # DTM's: a branch keeps failing (retry count >= AlertRetryLimit)
    FAILED = "failed"  # the transaction ended failed (rolled back)
    STUCK = "stuck"  # still unfinished `stuck_after` seconds after it was created


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Where alerts go and when: DTM's AlertWebHook and AlertRetryLimit plus dtmx's kinds."""

    url: str
    retry_limit: int = 3
    kinds: frozenset[AlertKind] = frozenset({AlertKind.RETRY})
    stuck_after: float = 3600.0
    timeout: float = 3.0
    attempts: int = 5
    backoff: float = 1.0  # seconds before the second POST; doubles after each failure


def retry_count(next_cron_interval: float, base_interval: float) -> int:
    """DTM's retry count: how many times the interval has doubled, after this backoff."""
    if base_interval <= 0 or next_cron_interval <= 0:
        return 0
    return max(0, int(math.log2(2 * next_cron_interval / base_interval)))


class Alerts:
    """Decides which transactions to report and sends the reports in the background."""

    def __init__(self, config: AlertConfig, *, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_QUEUE_MAX)
        self._sent: OrderedDict[tuple[str, AlertKind], None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        # the URL may carry a token: log lines name its host only
        self._where = urlparse(config.url).hostname or "webhook"

    # ---- deciding (called by the engine's observer, synchronously) ----------------------
    def branch_error(
        self, trans: Transaction, url: str, error: str, base_interval: float
    ) -> None:
        """A branch call will be retried: DTM's retry alert, and `stuck` when it is old."""
        kinds = self.config.kinds
        if AlertKind.RETRY in kinds:
            count = retry_count(trans.next_cron_interval, base_interval)
            if count >= self.config.retry_limit:
                self._notify(AlertKind.RETRY, trans, url, error, count)
        self.ongoing(trans, url, error)

    def ongoing(self, trans: Transaction, url: str, error: str = "") -> None:
        """The transaction is not done yet: `stuck` once it is older than stuck_after."""
        if (AlertKind.STUCK in self.config.kinds
                and self.clock.now() - trans.create_time >= self.config.stuck_after):
            self._notify(AlertKind.STUCK, trans, url, error, trans.options.retry_count)

    def finished(self, trans: Transaction) -> None:
        """Queue a FAILED alert for a transaction that ended failed, when that kind is on."""
        if AlertKind.FAILED in self.config.kinds and trans.status is Status.FAILED:
            self._notify(AlertKind.FAILED, trans, "", trans.rollback_reason,
                         trans.options.retry_count)

    def _notify(
        self, kind: AlertKind, trans: Transaction, url: str, error: str, count: int
    ) -> None:
        key = (trans.gid, kind)
        if key in self._sent:
            return
        self._sent[key] = None
        if len(self._sent) > _SENT_MAX:
            self._sent.popitem(last=False)
        body = {"gid": trans.gid, "status": trans.status.value, "branch": url, "error": error,
                "retry_count": count, "kind": kind.value}
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            log.warning("alert queue full: %s alert for %s dropped", kind, trans.gid,
                        extra={"gid": trans.gid})
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._send_all())

    # ---- sending ----------------------------------------------------------------------
    async def _send_all(self) -> None:
        while True:
            body = await self._queue.get()
            try:
                await self._send(body)
            finally:
                self._queue.task_done()

    async def _send(self, body: dict[str, Any]) -> None:
        cfg = self.config
        if self._session is None:
            self._session = aiohttp.ClientSession()
        delay = cfg.backoff
        problem = ""
        for attempt in range(1, cfg.attempts + 1):
            try:
                async with self._session.post(
                    cfg.url, json=body, timeout=aiohttp.ClientTimeout(total=cfg.timeout)
                ) as resp:
                    if resp.status < 300:
                        log.info("sent %s alert for %s to %s", body["kind"], body["gid"],
                                 self._where, extra={"gid": body["gid"]})
                        return
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                problem = f"{type(e).__name__}: {e}"
            if attempt < cfg.attempts:
                await self.clock.sleep(delay)
                delay *= 2
        log.error("alert webhook %s: %s alert for %s not delivered after %d attempts (%s)",
                  self._where, body["kind"], body["gid"], cfg.attempts, problem,
                  extra={"gid": body["gid"]})

    async def drain(self, timeout: float) -> None:
        """Give queued alerts up to `timeout` seconds to go out (on a clean stop)."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)

    async def close(self) -> None:
        """Stop the sender task (queued alerts not yet sent are dropped; `drain` first)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
