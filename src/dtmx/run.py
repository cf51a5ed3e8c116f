"""One run of one transaction this process owns: the interpreter of the planners' plans.

`Run.go` asks the transaction's planner for the next step (`Call`, `Transition`,
`QueryPrepared`, `Wait`), carries it out, feeds the results back and asks again, until the
transaction finishes or must wait. The order of effects is what makes it safe:
- a status change is committed before any call that depends on it;
- branch results are buffered and written together with the next change, and before the
  next branch call while that call can still change the outcome, unless the plan lets them
  stay unwritten (a plain sequential saga's successes, in batches written in the
  background while its next actions are called: see dtmx.core.saga), so a saga of two
  steps costs two store writes in all (create, final status), a 1,000-step one a write per
  batch of steps that never holds up a call, and a TCC's confirms are written with its
  final status;
- a status change and a saga action's failure are never left unwritten: each is written,
  with every result buffered before it, before anything that depends on it is done;
- every write is compare-and-set on (status, owner): when another server has taken the
  transaction over (our lease ran out), our write fails and we stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

from dtmx.clock import Clock
from dtmx.core import processors
from dtmx.core.models import (
    DEFAULT_KEEP_CALLS,
    Branch,
    BranchUpdate,
    CallRecord,
    Change,
    Op,
    Outcome,
    Protocol,
    Status,
    Transaction,
    TransType,
)
from dtmx.core.plan import Call, QueryPrepared, Resume, Transition, Wait
from dtmx.core.timing import (
    Timing,
    lease_running_out,
    needs_longer_lease,
    request_timeout,
    retry_interval,
)
from dtmx.invoke.base import BranchCall, CallResult, Followup, Invoker
from dtmx.invoke.workflow import callback_payload
from dtmx.run_ahead import Ahead
from dtmx.security.redact import cap_text
from dtmx.stores.base import Store
from dtmx.telemetry.observer import Observer

log = logging.getLogger("dtmx.engine")

#: a run gives the loop a turn after this many calls: calls that need no wait (empty URLs,
#: local functions answering at once) and inline store writes never suspend, and a long
#: saga of them would hold every other request up until its end
_YIELD_EVERY = 32


class Run(Ahead):
    """The working state of one run: the rows as we believe them plus unwritten results."""

    __slots__ = ("_call_consts", "_index", "_index_of", "_late", "_server", "branches",
                 "clock", "failure", "invoker", "owner_header", "reason_bytes")

    def __init__(self, *, store: Store, invoker: Invoker, clock: Clock, timing: Timing,
                 observer: Observer, trans: Transaction, branches: Sequence[Branch],
                 owner: str, keep_calls: int = DEFAULT_KEEP_CALLS,
                 reason_bytes: int = 512, owner_header: str = "") -> None:
        super().__init__(store=store, timing=timing, observer=observer, trans=trans,
                         owner=owner, keep_calls=keep_calls)
        self.invoker, self.clock = invoker, clock
        #: Settings.BranchOwnerHeader: the header that names our claim on each branch call
        self.owner_header = owner_header
        self.branches = list(branches)
        self.reason_bytes = reason_bytes
        self.failure = ""
        self._index: dict[tuple[str, Op], Branch] = {}
        self._index_of: list[Branch] | None = None
        #: calls answered whose telling (observer) and call records are still to be done:
        #: that work waits until the next call is on the wire (see _settle)
        self._late: list[tuple[Branch, CallResult, float, float]] = []
        #: (headers, timeout) of every branch call of this run, made once
        self._call_consts: tuple[dict[str, str], float] | None = None
        self._server = owner.rsplit(":", 1)[0]  # the process, without the claim's number

    def _by_key(self) -> dict[tuple[str, Op], Branch]:
        """Branches by (branch_id, op), built once per branch list (a reload replaces the
        list), so a call costs the same in a long saga as in a short one."""
        if self._index_of is not self.branches:
            self._index = {b.key: b for b in self.branches}
            self._index_of = self.branches
        return self._index

    async def go(self) -> Transaction:
        """Process the transaction until it finishes or has to wait; returns it as it is
        then believed to be stored. Never raises but for cancellation."""
        self.observer.run_started(self.trans)
        try:
            if needs_longer_lease(self.trans, self.timing):
                # claimed with the default lease, but this one's calls may take longer
                now = self.clock.now()
                if not await self._write(now, Change(next_cron_time=now + self._lease())):
                    return self.trans
            steps = 0
            while True:
                now = self.clock.now()
                step = self._planned(now) or processors.plan(
                    self.trans, self.branches, now, self.timing)
                if isinstance(step, Transition):
                    if not await self._transition(step, now):
                        return self.trans
                    if step.status.finished:
                        self.observer.finished(self.trans)
                        return self.trans
                elif isinstance(step, Call):
                    if not await self._call(step, now):
                        return self.trans
                    steps += 1
                    if not steps % _YIELD_EVERY:
                        await asyncio.sleep(0)
                elif isinstance(step, QueryPrepared):
                    if not await self._query_prepared(now):
                        return self.trans
                elif isinstance(step, Resume):
                    await self._resume(step, now)
                    return self.trans
                else:
                    await self._wait(step, now)
                    return self.trans
        except asyncio.CancelledError:
            # Shutting down: hand the transaction back, due now, instead of leaving it to
            # wait out the lease.
            await self._release()
            raise
        except Exception:
            # A store error mid-run: nothing unwritten is lost, because the lease ends and
            # the transaction is picked up again from what was committed.
            log.exception("processing %s stopped", self.trans.gid)
            return self.trans
        finally:
            self._forget_behind()
            self.observer.run_ended(self.trans)

    async def _release(self) -> None:
        if self.trans.status.finished:
            return
        try:
            # with the results gathered so far: less to redo
            await self._write(self.clock.now(), Change(next_cron_time=self.clock.now()))
        except Exception as e:  # the lease still ends on its own
            log.info("could not release %s: %s", self.trans.gid, e)

    async def _transition(self, step: Transition, now: float) -> bool:
        t = self.trans
        reason = step.reason
        if step.status is Status.ABORTING and not reason:
            reason = self.failure or "fail message lost"
        change = Change(
            status=step.status,
            rollback_reason=reason or None,
            next_cron_time=None if step.status.finished else now + self._lease(),
        )
        if not await self._write(now, change):
            return False
        t.status = step.status
        if reason:
            t.rollback_reason = reason
        if step.reload:
            self.branches = await self.store.get_branches(gid=t.gid)
        if step.status is Status.SUCCEED:
            t.finish_time = now
        elif step.status is Status.FAILED:
            t.rollback_time = now
        return True

    def _branch_call(self, b: Branch, then: Followup | None = None) -> BranchCall:
        t = self.trans
        return self._call_of(b.url, b.branch_id, b.op, b.data,
                             force_post=t.trans_type is TransType.XA,
                             json_rpc=t.protocol is Protocol.JSON_RPC, then=then)

    def _call_of(self, url: str, branch_id: str, op: Op | str, payload: bytes, *,
                 force_post: bool = False, json_rpc: bool = False,
                 then: Followup | None = None) -> BranchCall:
        """A call of `url` for this transaction, with its branch headers (and our owner
        token, when configured) and timeout."""
        t = self.trans
        consts = self._call_consts
        if consts is None:  # the same for every call of this run: made once
            headers = t.options.branch_headers
            if self.owner_header:  # ours wins over a client's header of the same name
                headers = {k: v for k, v in headers.items()
                           if k.lower() != self.owner_header.lower()}
                headers[self.owner_header] = self.owner
            consts = self._call_consts = (headers, request_timeout(t, self.timing))
        return BranchCall(url, t.gid, t.trans_type, branch_id, op, payload, consts[0],
                          consts[1], force_post, json_rpc, then)

    def _record(self, branch_id: str, op: Op, start: float, res: CallResult) -> None:
        """Keep one call for the history: its result and a bounded reason (the branch
        answer as the invoker kept it; request headers are never part of it)."""
        self._settle()  # the calls before it come first
        self._keep(branch_id, op, start, self.clock.now(), res)

    def _keep(self, branch_id: str, op: Op, start: float, end: float, res: CallResult) -> None:
        reason = "" if res.outcome is Outcome.SUCCESS else cap_text(res.detail,
                                                                     self.reason_bytes)
        # numbered after the op's stored calls and this run's (a failed write ends the
        # run, and a reload reads the count back); an op without a row: the store numbers
        b = self._by_key().get((branch_id, op))
        attempt = 0
        if b is not None:
            b.calls = attempt = b.calls + 1
        self.calls.append(CallRecord(branch_id, op, start, max(0.0, end - start),
                                     res.outcome, reason, self._server, None, attempt))

    def _settle(self) -> None:
        """Tell the observer of the calls answered since the last time, and keep their
        records. Called soon after each step (when the next call is on the wire: that work
        does not decide the next call, so the branch's answer time hides it) and before
        anything reads the records or writes."""
        late = self._late
        if not late:
            return
        self._late = []
        t = self.trans
        for b, res, start, end in late:
            self.observer.branch(t, b, res)
            if b.url:  # an op without a URL (an empty compensation) is a no-op, not a call
                self._keep(b.branch_id, b.op, start, end, res)

    async def _timed(self, call: BranchCall) -> tuple[CallResult, float, float]:
        start = self.clock.now() if call.sent is None else self._sent_at
        res = await self.invoker.call(call)
        return res, start, self.clock.now()

    async def _call(self, step: Call, now: float) -> bool:
        behind = self._behind  # once answered (or the lease runs low), see what it got
        if behind is not None and (behind.done() or lease_running_out(
                self.trans, now, self.timing)) and not await self._caught_up():
            return False  # the batch written in the background was refused
        if self.pending:
            # The buffered results go out before the next call, unless the outcome is
            # decided (see Call.decided) or the plan lets that many stay unwritten (see
            # Call.unwritten, and the argument in dtmx.core.saga): then they ride on a
            # later write, and a batch of them is written in the background while the
            # next calls go on (one batch at a time: at most 2 * unwritten + 1 results
            # are unwritten when a call is made: `unwritten` buffered, `unwritten` + 1 in
            # the batch being written). Either way the claim is extended once
            # less than half a lease is left; leaving next_cron_time alone otherwise
            # keeps the write off the due-time index, which SQL stores pay for.
            if lease_running_out(self.trans, now, self.timing):
                if not await self._write(now, Change(next_cron_time=now + self._lease())):
                    return False
            elif not step.decided and len(self.pending) > step.unwritten:
                if not step.unwritten:
                    if not await self._write(now, Change()):
                        return False
                else:
                    if not await self._caught_up():  # one batch in the background at a time
                        return False
                    self._write_behind(now)
        by_key = self._by_key()
        todo = [by_key[k] for k in step.keys]
        results: list[tuple[CallResult, float, float]]
        if len(todo) == 1:  # a sequential step: no task and gathering future per call
            results = [await self._timed(self._sequential_call(step, todo[0], now))]
            self._flying = self._follow = None
        else:
            results = await asyncio.gather(*(self._timed(self._branch_call(b)) for b in todo))
        unsettled: list[Outcome] = []
        later = self.clock.now()
        t = self.trans
        late = self._late
        if not late:  # runs once the next call is sent (or this run waits)
            asyncio.get_running_loop().call_soon(self._settle)
        for b, (res, start, end) in zip(todo, results, strict=True):
            late.append((b, res, start, end))
            status = processors.branch_status(t.trans_type, b.op, res.outcome)
            if status is None:
                unsettled.append(res.outcome)
                log.info("%s branch %s %s: %s %s", t.gid, b.branch_id, b.op, res.outcome,
                         res.detail)
                continue
            b.status = status
            b.update_time = b.finish_time = later
            self.pending.append(BranchUpdate(b.branch_id, b.op, status))
            if status is Status.FAILED:
                self.failure = f"url:{b.url} return failed: {res.detail}"
        if not unsettled:
            self.reset_interval = t.next_cron_interval > self._base_interval()
            return True
        # only "ongoing" answers keep the interval; any error backs off
        backoff = any(o is not Outcome.ONGOING for o in unsettled)
        return await self._retry_later(later, backoff=backoff, counts=_counts_retry(t, todo))

    async def _retry_later(self, now: float, *, backoff: bool, counts: bool) -> bool:
        """Schedule the next attempt, or, past a saga's retry_limit, roll it back now.

        Returns whether the run goes on (it does after the switch to aborting).
        """
        t = self.trans
        if counts and t.options.retry_limit > 0:
            if t.options.retry_count >= t.options.retry_limit:
                limit = t.options.retry_limit
                reason = f"RetryCount is greater than RetryLimit, RetryLimit: {limit}"
                return await self._transition(Transition(Status.ABORTING, reason), now)
            t.options.retry_count += 1
        interval = retry_interval(t, self.timing, backoff=backoff)
        self._settle()
        # the calls that made this retry necessary say when it comes
        self.calls = [replace(c, next_retry=now + interval)
                      if c.outcome is not Outcome.SUCCESS and c.next_retry is None else c
                      for c in self.calls]
        retry = Change(
            next_cron_time=now + interval,
            next_cron_interval=interval,
            retry_count=t.options.retry_count if counts else None,
        )
        if await self._write(now, retry):
            t.next_cron_interval = interval
            t.next_cron_time = now + interval
        return False

    async def _query_prepared(self, now: float) -> bool:
        t = self.trans
        start = self.clock.now()
        res = await self.invoker.call(self._call_of(
            t.query_prepared, "00", Op.MSG, b"", json_rpc=t.protocol is Protocol.JSON_RPC))
        self._record("00", Op.MSG, start, res)
        if res.outcome is Outcome.SUCCESS:
            return await self._transition(Transition(Status.SUBMITTED), now)
        if res.outcome is Outcome.FAILURE:
            failed = Transition(Status.FAILED, "query_prepared answered FAILURE")
            if await self._transition(failed, now):
                self.observer.finished(t)
            return False
        log.info("%s query_prepared %s %s", t.gid, res.outcome, res.detail)
        await self._retry_later(now, backoff=res.outcome is Outcome.ERROR, counts=False)
        return False

    async def _resume(self, step: Resume, now: float) -> None:
        """Call a prepared workflow's callback; its client replays the workflow and submits
        the outcome itself, so any answer only sets when to look again (DTM's cron: every
        retry interval, backing off after errors). The write is compare-and-set on
        `prepared`: a workflow submitted meanwhile is left alone."""
        t = self.trans
        res = await self.invoker.call(self._call_of(
            t.query_prepared, "00", step.op, callback_payload(t.protocol, step.data)))
        if res.outcome is not Outcome.SUCCESS:
            log.info("%s workflow callback %s %s", t.gid, res.outcome, res.detail)
        if res.outcome in (Outcome.SUCCESS, Outcome.FAILURE):
            # the client normally submitted before answering: then there is nothing to
            # schedule (and our compare-and-set would only fail)
            now_stored = await self.store.get(gid=t.gid)
            if now_stored is None or now_stored.status is not Status.PREPARED:
                return
        await self._retry_later(self.clock.now(), backoff=res.outcome is Outcome.ERROR,
                                counts=False)

    async def _wait(self, step: Wait, now: float) -> None:
        until = step.until if step.until is not None else now + self._base_interval()
        await self._write(now, Change(next_cron_time=until))


def _counts_retry(trans: Transaction, called: Sequence[Branch]) -> bool:
    """retry_limit counts retries of saga actions only (DTM's rule)."""
    return trans.trans_type is TransType.SAGA and any(b.op is Op.ACTION for b in called)
