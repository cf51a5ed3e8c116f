"""The one place where the store, the processors and the branch invokers meet.

`Engine.run` drives one transaction that this process owns (its owner token is on the row)
until it finishes or must wait. The order of effects is what makes it safe:
- a status change is committed before any call that depends on it;
- branch results are buffered and written together with the next change, and before the
  next branch call while that call can still change the outcome, so a saga of two steps
  costs three store writes in all, and a TCC's confirms are written with its final status;
- every write is compare-and-set on (status, owner): when another server has taken the
  transaction over (our lease ran out), our write fails and we stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from dtmx.clock import Clock
from dtmx.core import processors
from dtmx.core.models import (
    Branch,
    BranchUpdate,
    Change,
    Op,
    Outcome,
    Status,
    Transaction,
    TransType,
)
from dtmx.core.plan import Call, Defaults, QueryPrepared, Transition, Wait
from dtmx.core.timing import next_interval
from dtmx.invoke.base import BranchCall, CallResult, Invoker
from dtmx.metrics import Metrics
from dtmx.stores.base import Store

log = logging.getLogger("dtmx.engine")


@dataclass(slots=True, frozen=True)
class EngineConfig:
    """Timing of the engine (seconds). Tests shorten these; production keeps DTM's."""

    retry_interval: float = 10.0
    max_retry_interval: float = 3600.0
    request_timeout: float = 3.0
    timeout_to_fail: float = 35.0
    lease: float = 30.0
    dtm_address: str = ""


@dataclass(slots=True)
class _Run:
    """Working state of one run: the rows as we believe them plus unwritten results."""

    trans: Transaction
    owner: str
    branches: list[Branch]
    pending: list[BranchUpdate] = field(default_factory=list)
    failure: str = ""
    reset_interval: bool = False  # progress was made: the backoff starts again from the base


class Engine:
    def __init__(
        self,
        *,
        store: Store,
        invoker: Invoker,
        clock: Clock,
        config: EngineConfig,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.invoker = invoker
        self.clock = clock
        self.config = config
        self.defaults = Defaults(timeout_to_fail=config.timeout_to_fail)
        self.metrics = metrics or Metrics()

    # ---- timing helpers -------------------------------------------------------------
    def base_interval(self, trans: Transaction) -> float:
        if trans.options.retry_interval > 0:
            return float(trans.options.retry_interval)
        return self.config.retry_interval

    def request_timeout(self, trans: Transaction) -> float:
        if trans.options.request_timeout > 0:
            return float(trans.options.request_timeout)
        return self.config.request_timeout

    def lease(self, trans: Transaction) -> float:
        """How long a claim holds: it must outlast one round of branch calls."""
        return max(self.config.lease, 2 * self.request_timeout(trans) + 1)

    # ---- the loop -------------------------------------------------------------------
    async def run(self, trans: Transaction, branches: Sequence[Branch], owner: str) -> Transaction:
        """Process `trans` (owned by `owner`) until it finishes or has to wait."""
        r = _Run(trans=trans, owner=owner, branches=list(branches))
        try:
            if self.lease(trans) > self.config.lease:
                # claimed with the default lease, but this one's calls may take longer
                extend = Change(next_cron_time=self.clock.now() + self.lease(trans))
                if not await self._write(r, self.clock.now(), extend):
                    return r.trans
            while True:
                now = self.clock.now()
                step = processors.plan(r.trans, r.branches, now, self.defaults)
                if isinstance(step, Transition):
                    if not await self._transition(r, step, now):
                        return r.trans
                    if step.status.finished:
                        self.metrics.finished(r.trans)
                        return r.trans
                elif isinstance(step, Call):
                    if not await self._call(r, step, now):
                        return r.trans
                elif isinstance(step, QueryPrepared):
                    if not await self._query_prepared(r, now):
                        return r.trans
                else:
                    await self._wait(r, step, now)
                    return r.trans
        except asyncio.CancelledError:
            # Shutting down: hand the transaction back, due now, instead of leaving it to
            # wait out the lease.
            await self._release(r)
            raise
        except Exception:
            # A store error mid-run: nothing unwritten is lost, because the lease ends and
            # the transaction is picked up again from what was committed.
            log.exception("processing %s stopped", r.trans.gid)
            return r.trans

    async def _release(self, r: _Run) -> None:
        if r.trans.status.finished:
            return
        try:
            # with the results gathered so far: less to redo
            await self._write(r, self.clock.now(), Change(next_cron_time=self.clock.now()))
        except Exception as e:  # the lease still ends on its own
            log.info("could not release %s: %s", r.trans.gid, e)

    async def _write(self, r: _Run, now: float, change: Change) -> bool:
        """Write `change` plus the buffered branch results, compare-and-set on our claim."""
        change = replace(change, branches=tuple(r.pending))
        if r.reset_interval and change.next_cron_interval is None:
            change = replace(change, next_cron_interval=self.base_interval(r.trans))
        ok = await self.store.update(
            gid=r.trans.gid,
            now=now,
            expect_status=r.trans.status,
            expect_owner=r.owner,
            change=change,
        )
        if not ok:
            log.info("%s changed under us (status or owner); stopping this run", r.trans.gid)
            return False
        r.pending.clear()
        r.trans.update_time = now
        if change.next_cron_time is not None:
            r.trans.next_cron_time = change.next_cron_time
        if r.reset_interval:
            r.trans.next_cron_interval = self.base_interval(r.trans)
            r.reset_interval = False
        return True

    async def _transition(self, r: _Run, step: Transition, now: float) -> bool:
        reason = step.reason
        if step.status is Status.ABORTING and not reason:
            reason = r.failure or "fail message lost"
        change = Change(
            status=step.status,
            rollback_reason=reason or None,
            next_cron_time=None if step.status.finished else now + self.lease(r.trans),
        )
        if not await self._write(r, now, change):
            return False
        r.trans.status = step.status
        if reason:
            r.trans.rollback_reason = reason
        if step.reload:
            r.branches = await self.store.get_branches(gid=r.trans.gid)
        if step.status is Status.SUCCEED:
            r.trans.finish_time = now
        elif step.status is Status.FAILED:
            r.trans.rollback_time = now
        return True

    def _branch_call(self, r: _Run, b: Branch) -> BranchCall:
        t = r.trans
        return BranchCall(
            url=b.url,
            gid=t.gid,
            trans_type=t.trans_type.value,
            branch_id=b.branch_id,
            op=b.op.value,
            payload=b.data,
            headers=t.options.branch_headers,
            timeout=self.request_timeout(t),
            force_post=t.trans_type is TransType.XA,
        )

    async def _call(self, r: _Run, step: Call, now: float) -> bool:
        if r.pending:
            # The buffered results go out before the next call, unless the outcome is
            # decided (see Call.decided): then they ride on a later write. Either way the
            # claim is extended once less than half a lease is left (a round of calls takes
            # at most a request timeout, under half a lease); leaving next_cron_time alone
            # otherwise keeps the write off the due-time index, which SQL stores pay for.
            lease = self.lease(r.trans)
            if (r.trans.next_cron_time or 0.0) - now < lease / 2:
                if not await self._write(r, now, Change(next_cron_time=now + lease)):
                    return False
            elif not step.decided and not await self._write(r, now, Change()):
                return False
        by_key = {b.key: b for b in r.branches}
        todo = [by_key[k] for k in step.keys]
        results: list[CallResult] = await asyncio.gather(
            *(self.invoker.call(self._branch_call(r, b)) for b in todo)
        )
        unsettled: list[Outcome] = []
        later = self.clock.now()
        for b, res in zip(todo, results, strict=True):
            self.metrics.branch(r.trans, b, res.outcome)
            status = processors.branch_status(r.trans.trans_type, b.op, res.outcome)
            if status is None:
                unsettled.append(res.outcome)
                log.info("%s branch %s %s: %s %s", r.trans.gid, b.branch_id, b.op, res.outcome,
                         res.detail)
                continue
            b.status = status
            b.update_time = b.finish_time = later
            r.pending.append(BranchUpdate(b.branch_id, b.op, status))
            if status is Status.FAILED:
                r.failure = f"url:{b.url} return failed: {res.detail}"
        if not unsettled:
            r.reset_interval = r.trans.next_cron_interval > self.base_interval(r.trans)
            return True
        # only "ongoing" answers keep the interval; any error backs off
        backoff = any(o is not Outcome.ONGOING for o in unsettled)
        return await self._retry_later(r, later, backoff=backoff,
                                       counts=_counts_retry(r.trans, todo))

    async def _retry_later(self, r: _Run, now: float, *, backoff: bool, counts: bool) -> bool:
        """Schedule the next attempt, or, past a saga's retry_limit, roll it back now.

        Returns whether the run goes on (it does after the switch to aborting).
        """
        t = r.trans
        if counts and t.options.retry_limit > 0:
            if t.options.retry_count >= t.options.retry_limit:
                limit = t.options.retry_limit
                reason = f"RetryCount is greater than RetryLimit, RetryLimit: {limit}"
                return await self._transition(r, Transition(Status.ABORTING, reason), now)
            t.options.retry_count += 1
        base = self.base_interval(t)
        interval = next_interval(t.next_cron_interval, base, self.config.max_retry_interval,
                                 backoff=backoff)
        retry = Change(
            next_cron_time=now + interval,
            next_cron_interval=interval,
            retry_count=t.options.retry_count if counts else None,
        )
        if await self._write(r, now, retry):
            t.next_cron_interval = interval
            t.next_cron_time = now + interval
        return False

    async def _query_prepared(self, r: _Run, now: float) -> bool:
        t = r.trans
        res = await self.invoker.call(
            BranchCall(
                url=t.query_prepared,
                gid=t.gid,
                trans_type=t.trans_type.value,
                branch_id="00",
                op=Op.MSG.value,
                payload=b"",
                headers=t.options.branch_headers,
                timeout=self.request_timeout(t),
            )
        )
        if res.outcome is Outcome.SUCCESS:
            return await self._transition(r, Transition(Status.SUBMITTED), now)
        if res.outcome is Outcome.FAILURE:
            failed = Transition(Status.FAILED, "query_prepared answered FAILURE")
            ok = await self._transition(r, failed, now)
            if ok:
                self.metrics.finished(r.trans)
            return False
        log.info("%s query_prepared %s %s", t.gid, res.outcome, res.detail)
        await self._retry_later(r, now, backoff=res.outcome is Outcome.ERROR, counts=False)
        return False

    async def _wait(self, r: _Run, step: Wait, now: float) -> None:
        until = step.until if step.until is not None else now + self.base_interval(r.trans)
        await self._write(r, now, Change(next_cron_time=until))


def _counts_retry(trans: Transaction, called: Sequence[Branch]) -> bool:
    """retry_limit counts retries of saga actions only (DTM's rule)."""
    return trans.trans_type is TransType.SAGA and any(b.op is Op.ACTION for b in called)
