"""The engine: the one code that writes transactions.

Three doors lead in, and all of them end in a `Run` (dtmx.run, where the write rules are):
- clients' prepare / submit / abort: `core.admission` decides, the engine carries the
  decision out (create, or take with a change, or read and decide again);
- registerBranch, force stop and the operators' "due now" resets, one store verb each;
- the poller: `claim_due` claims a batch (owner token and lease on each row), `resume`
  runs one of them.
Every claim gets a fresh owner token, so even this process's stale runs lose their
compare-and-set.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Container, Coroutine
from typing import Any

from dtmx.clock import Clock
from dtmx.core import admission, local, msg, tcc, workflow
from dtmx.core.admission import (
    UNREAD,
    Accept,
    Act,
    Create,
    Reject,
    Stored,
    Take,
)
from dtmx.core.limits import Limits
from dtmx.core.local import missing_local
from dtmx.core.models import Branch, Change, Status, Transaction, TransType
from dtmx.core.request import Registration, TransRequest, check_fanout
from dtmx.core.timing import Timing, claim_until, hand_back_at
from dtmx.errors import BadRequest, DuplicateBranch, DuplicateProgress, Failure
from dtmx.invoke.base import Invoker
from dtmx.run import Run
from dtmx.stores.base import Store
from dtmx.telemetry.observer import Observer
from dtmx.topics import subscribers

log = logging.getLogger("dtmx.engine")


class Engine:
    """Admits, claims and runs the transactions of one store; nothing else writes them."""

    def __init__(
        self,
        *,
        store: Store,
        invoker: Invoker,
        clock: Clock,
        timing: Timing,
        observer: Observer | None = None,
        limits: Limits | None = None,
        local_functions: Container[str] = frozenset(),
        owner_prefix: str | None = None,
        owner_header: str = "",
    ) -> None:
        """`owner_prefix` names this process in its owner tokens (default: host, pid and a
        random tag); a simulation running several engines in one process names each.
        `owner_header`, if set, is a header every branch call carries the claim's owner
        token in."""
        self.store = store
        #: names of the local:// functions this process can call (dtmx.embedded's
        #: registry, read at each run); a transaction naming others is handed back
        self.local_functions = local_functions
        self.limits = limits or Limits()
        self.invoker = invoker
        self.clock = clock
        self.timing = timing
        # metrics, alerts, logs, spans: told what happens, never able to change it
        self.observer = observer or Observer(clock=clock)
        self._owner_prefix = owner_prefix or (
            f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}")
        self._owner_seq = itertools.count(1)
        self.owner_header = owner_header
        self._background: set[asyncio.Task[Transaction]] = set()
        self._direct = 0

    @property
    def runs_in_flight(self) -> int:
        """Runs of this process that have not ended (in the background after a submit or
        abort, or awaited by a client or the poller): exported as a gauge, and what a
        caller waits on to know that nothing it started is still writing."""
        return len(self._background) + self._direct

    def new_owner(self) -> str:
        """A fresh owner token for one claim."""
        return f"{self._owner_prefix}:{next(self._owner_seq)}"

    # ---- clients' acts --------------------------------------------------------------
    async def prepare(self, req: TransRequest) -> None:
        """Store `req` as a prepared transaction; a repeated prepare succeeds unchanged."""
        await self._admit(Act.PREPARE, req)

    async def submit(self, req: TransRequest) -> None:
        """Submit `req` (creating it, or taking its prepared row) and start running it;
        with wait_result, return once it finished and raise Failure unless it succeeded.
        A transaction already submitted answers success without a second run."""
        await self._admit(Act.SUBMIT, req)

    async def abort(self, req: TransRequest) -> None:
        """Roll a prepared (or aborting) TCC/XA back, or fail a prepared msg."""
        await self._admit(Act.ABORT, req)

    async def prepare_workflow(self, req: TransRequest) -> tuple[Transaction, list[Branch]]:
        """Store a workflow as prepared, or leave the stored one as it is; either way return
        it with its recorded steps (none for a new one), for the client to replay."""
        self.observer.about(req.gid, req.trans_type.value)
        decision = admission.decide(Act.PREPARE_WORKFLOW, req, UNREAD)
        if isinstance(decision, Create):
            now = self.clock.now()
            trans = admission.new_transaction(req, decision.status, now, "", self.timing)
            if await self.store.create(trans=trans, branches=[]):
                return trans, []
        stored = await self.store.get(gid=req.gid)
        decision = admission.decide(Act.PREPARE_WORKFLOW, req, stored)
        if isinstance(decision, Reject):
            raise decision.error
        assert stored is not None and isinstance(decision, Accept)
        return stored, await self.store.get_branches(gid=req.gid)

    async def _admit(self, act: Act, req: TransRequest) -> None:
        self.observer.about(req.gid, req.trans_type.value)
        decision = admission.decide(act, req, UNREAD)
        if isinstance(decision, Reject):
            raise decision.error
        now = self.clock.now()
        branches: list[Branch] = []
        if act is not Act.ABORT:
            subs: dict[str, list[str]] = {}
            topics = admission.topics(req)
            if topics:  # only a msg's topic:// steps fan out (to their subscribers' rows)
                subs = await subscribers(self.store, topics)
                check_fanout(req.steps, subs, self.limits, msg.TOPIC_PREFIX)
            branches = admission.new_branches(req, now, subs)
        stored: Stored = UNREAD
        while True:
            if isinstance(decision, Accept):
                return
            if isinstance(decision, Reject):
                raise decision.error
            if isinstance(decision, Take):
                if await self._take(decision, req.gid, now):
                    return
                if decision.otherwise is not None:
                    decision = decision.otherwise
                    continue
            elif isinstance(decision, Create) and await self._create(decision, req, branches,
                                                                      now):
                return
            if stored is not UNREAD:  # decided on the row just read, and it changed again
                raise Failure(f"{req.gid} changed status concurrently; retry")
            stored = await self.store.get(gid=req.gid)
            decision = admission.decide(act, req, stored)

    async def _create(self, c: Create, req: TransRequest, branches: list[Branch],
                      now: float) -> bool:
        owner = self.new_owner() if c.run else ""
        trans = admission.new_transaction(req, c.status, now, owner, self.timing)
        if not await self.store.create(trans=trans, branches=branches):
            return False
        if c.run:
            await self._start(trans, branches, owner)
        return True

    async def _take(self, t: Take, gid: str, now: float) -> bool:
        reason = t.reason or None
        if not t.run:
            # only a status change (a workflow's submit, a msg's abort): nothing to read
            # back, so a compare-and-set update, batched with concurrent ones
            return await self.store.update(
                gid=gid, now=now, expect_status=t.expect, expect_owner=None,
                expect_type=t.trans_type,
                change=Change(status=t.status, rollback_reason=reason,
                              result=t.result or None))
        owner = self.new_owner()
        # A claim with the default lease, as claim_due gives: Run.go extends it at once
        # for a transaction whose stored options need a longer one.
        change = Change(status=t.status, owner=owner, rollback_reason=reason,
                        result=t.result or None,
                        next_cron_time=claim_until(now, self.timing))
        taken = await self.store.take(gid=gid, now=now, expect_status=t.expect,
                                      expect_type=t.trans_type, change=change)
        if taken is None:
            return False
        trans, branches = taken
        if t.wait_result:
            trans.options.wait_result = True
        await self._start(trans, branches, owner)
        return True

    async def _start(self, trans: Transaction, branches: list[Branch], owner: str) -> None:
        if not trans.options.wait_result:
            self._spawn(self._run(trans, branches, owner))
            return
        submitting = trans.status is Status.SUBMITTED
        done = await self.run(trans, branches, owner)
        if submitting and done.status is not Status.SUCCEED:
            raise Failure(done.rollback_reason or f"wait result not return success: {done.status}")

    def _spawn(self, run: Coroutine[Any, Any, Transaction]) -> None:
        task = asyncio.create_task(run)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- single writes --------------------------------------------------------------
    async def register_branch(self, reg: Registration) -> None:
        """Add a TCC/XA branch's second-phase ops, or record a workflow's finished step,
        while the transaction is prepared; one round trip. A TCC/XA's branches, and a
        workflow's recorded step ops, stay within Limits.MaxBranches (two ops a branch)."""
        gid, trans_type, branch_id = reg.gid, reg.trans_type, reg.branch_id
        self.observer.about(gid, trans_type.value, branch_id)
        now = self.clock.now()
        if trans_type is TransType.WORKFLOW:
            branches = [workflow.progress(gid, branch_id, reg.op, reg.status, reg.payload, now)]
        else:
            branches = tcc.gen_registered(trans_type, gid, branch_id, reg.payload, reg.urls,
                                          now)
        # a branch is two ops (an action and its undo), as a saga's steps are; a workflow
        # step records one row per op it ran (action, then its compensation or commit)
        max_ops = 2 * self.limits.MaxBranches
        # A branch of the other kind would never get its second phase (an XA branch's local
        # transaction would stay prepared, holding its locks): the store checks the type.
        try:
            ok = await self.store.add_branches(
                gid=gid, now=now, branches=branches, expect_status=Status.PREPARED,
                expect_type=trans_type, max_ops=max_ops,
            )
        except DuplicateBranch:
            if trans_type is TransType.WORKFLOW:
                raise DuplicateProgress(
                    f"step {branch_id} {reg.op} of {gid} is already recorded") from None
            raise DuplicateBranch(f"branch {branch_id} of {gid} is already registered") from None
        if not ok:
            await self._refused_registration(gid, trans_type, len(branches), max_ops)

    async def _refused_registration(self, gid: str, trans_type: TransType, adding: int,
                                    max_ops: int) -> None:
        """Say why add_branches refused (read only then: the refusal is the rare path)."""
        existing = await self.store.get(gid=gid)
        if existing is not None and existing.trans_type is not trans_type:
            raise BadRequest(f"gid {gid} is a {existing.trans_type}, not a {trans_type}")
        if existing is not None and existing.status is Status.PREPARED:
            held = len(await self.store.get_branches(gid=gid))
            if held + adding > max_ops:
                what = (f"{held} recorded step ops (two a step)"
                        if trans_type is TransType.WORKFLOW else f"{held // 2} branches")
                raise BadRequest(f"{gid} has {what}: more is beyond"
                                 f" Limits.MaxBranches ({self.limits.MaxBranches})")
        raise Failure(f"no trans with gid: {gid} status: prepared found")

    async def force_stop(self, gid: str) -> None:
        """Fail an unfinished transaction at once, whatever it was doing; its running
        owner's next write is refused."""
        self.observer.about(gid)
        for _ in range(5):
            existing = await self.store.get(gid=gid)
            error = admission.force_stop(gid, existing)
            if error is not None:
                raise error
            assert existing is not None
            if await self.store.update(
                gid=gid, now=self.clock.now(), expect_status=existing.status, expect_owner=None,
                change=Change(status=Status.FAILED, rollback_reason="force stopped"),
            ):
                return
        raise Failure(f"{gid} kept changing status; retry")

    async def reset_next_cron_time(self, gid: str) -> bool:
        """Make one unfinished transaction due now; False if there is none with `gid`."""
        return await self.store.reset_next_cron_time(gid=gid, now=self.clock.now())

    async def reset_cron_time(self, *, after: float, limit: int) -> tuple[int, bool]:
        """Make unfinished transactions due more than `after` seconds from now due now;
        (how many, whether more remain)."""
        return await self.store.reset_cron_time(now=self.clock.now(), after=after, limit=limit)

    # ---- the poller's door ----------------------------------------------------------
    async def claim_due(self, *, limit: int) -> list[Transaction]:
        """Claim up to `limit` due transactions for this process (one owner token, the
        default lease); each is then `resume`d."""
        owner = self.new_owner()
        claimed = await self.store.claim_due(
            now=self.clock.now(), lease=self.timing.lease, owner=owner, limit=limit
        )
        for trans in claimed:
            trans.owner = owner
        return claimed

    async def resume(self, trans: Transaction) -> Transaction:
        """Run a transaction claimed by `claim_due`, from its stored branches."""
        branches = await self.store.get_branches(gid=trans.gid)
        return await self.run(trans, branches, trans.owner)

    async def expire_finished(self, *, before: float, limit: int) -> int:
        """Delete up to `limit` transactions finished before `before`; how many."""
        return await self.store.expire_finished(before=before, limit=limit)

    # ---- runs -----------------------------------------------------------------------
    async def run(self, trans: Transaction, branches: list[Branch], owner: str) -> Transaction:
        """Process `trans` (claimed by `owner`) until it finishes or has to wait."""
        self._direct += 1
        try:
            return await self._run(trans, branches, owner)
        finally:
            self._direct -= 1

    async def _run(self, trans: Transaction, branches: list[Branch], owner: str
                   ) -> Transaction:
        missing = missing_local(trans, branches, self.local_functions)
        if missing:
            await self._hand_back(trans, owner, missing)
            return trans
        return await Run(store=self.store, invoker=self.invoker, clock=self.clock,
                         timing=self.timing, observer=self.observer, trans=trans,
                         branches=branches, owner=owner,
                         keep_calls=self.limits.MaxCallsPerBranch,
                         reason_bytes=self.limits.MaxCallReasonBytes,
                         owner_header=self.owner_header).go()

    async def _hand_back(self, trans: Transaction, owner: str, missing: list[str]) -> None:
        """Give a transaction whose local functions live in another process back to the
        store without calling anything: owner cleared, due a retry interval later, and a
        waiting row for the processes that have them (see dtmx.core.local)."""
        now = self.clock.now()
        due = hand_back_at(trans, now, self.timing)
        log.debug("%s needs local functions %s that this process lacks; handed back",
                  trans.gid, ", ".join(missing))
        try:
            if await self.store.update(gid=trans.gid, now=now, expect_status=trans.status,
                                       expect_owner=owner,
                                       change=Change(next_cron_time=due, owner="")):
                trans.next_cron_time, trans.owner = due, ""
                await self.store.kv_create(cat=local.WAITING, key=trans.gid,
                                           value=local.waiting_value(missing), now=now)
        except Exception as e:  # the claim's lease runs out on its own
            log.info("could not hand %s back: %s", trans.gid, e)

    async def adopt_waiting(self, *, limit: int) -> list[Transaction]:
        """Claim transactions other processes handed back that this one can run (one page
        of waiting rows); each is then `resume`d. A row whose transaction finished or is
        gone is deleted; one claimed by someone since stays until that run ends."""
        rows, _ = await self.store.kv_scan(cat=local.WAITING, position="", limit=limit)
        adopted: list[Transaction] = []
        for row in rows:
            if not local.can_adopt(row.v, self.local_functions):
                continue
            trans = await self.store.get(gid=row.k)
            if trans is None or trans.status.finished:
                await self.store.kv_delete(cat=local.WAITING, key=row.k)
                continue
            if trans.owner:  # claimed since it was handed back: that claim decides
                continue
            now = self.clock.now()
            owner = self.new_owner()
            until = claim_until(now, self.timing)
            if await self.store.update(gid=trans.gid, now=now, expect_status=trans.status,
                                       expect_owner="",
                                       change=Change(owner=owner, next_cron_time=until)):
                await self.store.kv_delete(cat=local.WAITING, key=row.k)
                trans.owner, trans.next_cron_time = owner, until
                adopted.append(trans)
        return adopted

    async def close(self) -> None:
        """Stop the background runs; their leases lapse and a poller resumes them later."""
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
