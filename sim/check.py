"""The invariants: checked as things happen (`legal`, `call_allowed`, the bank's at-most-once
effects) and once everything is quiet (`final`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dtmx.core import saga
from dtmx.core.models import Branch, Change, Op, Status, Transaction, TransType
from dtmx.core.workflow import CALLBACK_BRANCH
from dtmx.invoke.base import BranchCall
from sim.net import MSG_BRANCH, Bank
from sim.store import MemoryStore
from sim.workflow import commit_steps, result_of

if TYPE_CHECKING:
    from sim.config import TxSpec
    from sim.world import Outcomes

P, S, A, OK, F = (Status.PREPARED, Status.SUBMITTED, Status.ABORTING, Status.SUCCEED,
                  Status.FAILED)
#: The legal status changes, per transaction type.
EDGES: dict[TransType, set[tuple[Status, Status]]] = {
    TransType.SAGA: {(S, OK), (S, A), (A, F)},
    TransType.TCC: {(P, S), (P, A), (S, OK), (A, F)},
    TransType.XA: {(P, S), (P, A), (S, OK), (A, F)},
    TransType.MSG: {(P, S), (P, F), (S, OK)},
    TransType.WORKFLOW: {(P, OK), (P, F)},
}
#: The status a call of each op needs committed before it is made.
CALLED_IN = {Op.ACTION: S, Op.COMPENSATE: A, Op.CONFIRM: S, Op.CANCEL: A, Op.MSG: P,
             Op.COMMIT: S, Op.ROLLBACK: A}
#: The rollback reason `Engine.force_stop` writes: how the checks tell its write apart.
FORCE_STOPPED = "force stopped"
#: A registered transaction's (first phase, forward, backward) ops.
PHASES = {TransType.TCC: (Op.TRY, Op.CONFIRM, Op.CANCEL),
          TransType.XA: (Op.ACTION, Op.COMMIT, Op.ROLLBACK)}


def legal(trans_type: TransType, before: Status, after: Status) -> bool:
    """Whether `before -> after` is an edge of `trans_type`'s life (an unfinished status may
    be written again: a repeated abort keeps `aborting`)."""
    if before is after:
        return not before.finished
    return (before, after) in EDGES[trans_type]


def force_stop_legal(before: Transaction, change: Change, requested: bool) -> bool:
    """Whether a write is the operator's force stop, and a legal one: requested, from any
    unfinished status straight to failed (no compensation: the effects stay as they are,
    which is what a force stop means in DTM)."""
    return (requested and change.rollback_reason == FORCE_STOPPED and change.status is F
            and not before.status.finished)


def call_allowed(store: MemoryStore, call: BranchCall, owner: str, now: float,
                 stopped_owner: str | None = None) -> str:
    """Why the engine must not make `call` now ('' if it may): only the owner of an
    unexpired claim calls, in the status the op belongs to, and a saga compensates only
    steps whose action may have run (every step before it succeeded). `stopped_owner`: the
    claim's owner when an operator force-stopped the transaction."""
    got = store.peek(call.gid)
    what = f"{call.op} {call.gid}/{call.branch_id} by {owner or '?'}"
    if got is None:
        return f"{what}: no such transaction"
    trans, branches = got
    workflow = trans.trans_type is TransType.WORKFLOW
    if workflow and (call.branch_id, call.url) != (CALLBACK_BRANCH, trans.query_prepared):
        return f"{what}: the server called a workflow's step (only its app does)"
    if (call.op is Op.MSG or workflow) and trans.status is not P:
        # Benign, and left as is: a poller's run claimed the prepared msg at its timeout
        # and asks query_prepared, while the client's own submit or abort (a take, which
        # by design compares status, not owner) moved it on; the answer's write is then
        # refused. The query is read-only for a committed msg, and the barrier's rollback
        # row it may insert is what the msg's failure means anyway. Likewise a workflow's
        # callback, when its app submitted meanwhile: the replay finds it finished.
        return ""
    if trans.owner != owner:
        return f"{what}: the stored owner is {trans.owner} (two engines at once)"
    if (trans.next_cron_time or 0.0) <= now:
        return f"{what}: the claim ran out at {trans.next_cron_time} (now {now})"
    if trans.trans_type is TransType.SAGA and call.op is Op.ACTION:
        over = _unwritten_over(trans, branches, call.branch_id)
        if over:
            return f"{what}: {over}"
    if trans.status is F and stopped_owner and owner == stopped_owner:
        # the run that held the claim when the operator stopped the transaction: it learns
        # of the stop at its next write, which is refused (World.check_call holds it to
        # that); until then it may still call. No other run may (the owner check above).
        return ""
    if trans.status is not (P if workflow else CALLED_IN[Op(call.op)]):
        return f"{what}: called while {trans.status}"
    if call.op is Op.COMPENSATE:
        step = int(call.branch_id) - 1
        actions = {b.branch_id: b.status for b in branches if b.op is Op.ACTION}
        for p in saga_prereqs(trans.custom_data, trans.options.concurrent).get(step, ()):
            if actions.get(f"{p + 1:02d}") is not OK:
                return f"{what}: its prerequisite step {p + 1} had not succeeded"
    return ""


def _unwritten_over(trans: Transaction, branches: list[Branch], branch_id: str) -> str:
    """Whether a plain sequential saga's action is called with more earlier successes
    unwritten than the run allows ('' if not): none for a saga with a timeout or a retry
    limit, else at most UNWRITTEN_STEPS buffered plus UNWRITTEN_STEPS + 1 in the one batch
    written in the background (dtmx.run). The store's earlier actions not succeeded are
    exactly those: the run calls an action only after every earlier one succeeded."""
    if saga.parse_custom(trans.custom_data).concurrent or trans.options.concurrent:
        return ""
    strict = trans.options.timeout_to_fail > 0 or trans.options.retry_limit > 0
    bound = 0 if strict else 2 * saga.UNWRITTEN_STEPS + 1
    step = int(branch_id)
    unwritten = sum(1 for b in branches if b.op is Op.ACTION and int(b.branch_id) < step
                    and b.status is not OK)
    if unwritten > bound:
        return f"called with {unwritten} earlier results unwritten (at most {bound})"
    return ""


def saga_prereqs(custom_data: str, concurrent: bool, steps: int = 64
                 ) -> dict[int, tuple[int, ...]]:
    """step -> the steps whose success it waits for: the one before it in a sequential
    saga, its `orders` in a concurrent one."""
    custom = saga.parse_custom(custom_data)
    if custom.concurrent or concurrent:
        return dict(custom.orders)
    return {i: (i - 1,) for i in range(1, steps)}


def all_final(store: MemoryStore) -> bool:
    for gid in store.gids():
        got = store.peek(gid)
        if got is not None and not got[0].status.finished:
            return False
    return True


def final(store: MemoryStore, bank: Bank, out: Outcomes) -> list[str]:
    """Everything acknowledged is stored and finished, and its effects are what its
    final status says."""
    v: list[str] = []
    for gid in sorted(out.acked):
        if store.peek(gid) is None:
            v.append(f"{gid}: acknowledged, then lost")
    for gid in sorted(out.stop_acked - out.stopped.keys()):
        v.append(f"{gid}: force stop answered success, but never written")
    eff = bank.effects
    for gid in store.gids():
        got = store.peek(gid)
        assert got is not None
        trans, branches = got
        if not trans.status.finished:
            v.append(f"{gid}: still {trans.status} after quiescence")
            continue
        if trans.trans_type is TransType.SAGA:
            v += _saga_order(gid, len(branches) // 2, bank, trans.custom_data,
                             trans.options.concurrent)
        if gid in out.stopped:
            # force-stopped: failed for good, effects left as they were (nothing undone);
            # the bank held them to at most once, the call checks to no new run after it
            if trans.status is not F:
                v.append(f"{gid}: force-stopped, yet ended {trans.status}")
            continue
        spec = out.kinds.get(gid)
        steps = sorted({b.branch_id for b in branches})
        if trans.trans_type is TransType.SAGA:
            v += _saga(gid, trans.status, steps, eff, bank, spec, trans.custom_data,
                       trans.options.concurrent)
        elif trans.trans_type in PHASES:
            v += _registered(gid, trans.trans_type, trans.status, branches,
                             out.registered.get(gid, []), eff)
        elif trans.trans_type is TransType.WORKFLOW:
            assert spec is not None
            v += _workflow(trans, branches, spec, bank, out)
        else:
            v += _msg(gid, trans.status, steps, eff, bank)
    return v


def _saga(gid: str, status: Status, steps: list[str], eff: dict[tuple[str, str, Op], float],
          bank: Bank, spec: TxSpec | None, custom_data: str, concurrent: bool) -> list[str]:
    v = []
    failing = spec.failing if spec else ()
    if status is OK:
        if failing:
            v.append(f"{gid}: succeeded though step {failing[0] + 1} fails for good")
        for s in steps:
            if (gid, s, Op.ACTION) not in eff:
                v.append(f"{gid}: succeeded without the action of step {s}")
            if (gid, s, Op.COMPENSATE) in eff:
                v.append(f"{gid}: succeeded, yet step {s} was compensated")
        return v
    ran = [s for s in steps if (gid, s, Op.ACTION) in eff]
    undone = [s for s in steps if (gid, s, Op.COMPENSATE) in eff]
    if ran != undone:
        v.append(f"{gid}: failed; actions applied {ran}, compensations applied {undone}")
    # a step is compensated only after every step that ran after it (its dependents)
    when = {k[1]: t for k, t in bank.effects.items() if k[0] == gid and k[2] is Op.COMPENSATE}
    for step, pres in saga_prereqs(custom_data, concurrent, len(steps)).items():
        for p in pres:
            a, b = f"{step + 1:02d}", f"{p + 1:02d}"
            if a in when and b in when and when[a] > when[b]:
                v.append(f"{gid}: step {b} compensated before step {a}, which ran after it")
    return v


def _saga_order(gid: str, steps: int, bank: Bank, custom_data: str, concurrent: bool
                ) -> list[str]:
    """A saga's action takes effect only after its prerequisites' (the step before it, in
    a sequential saga) did: an action is called once those answered success, however
    early it is sent (force-stopped sagas too: nothing is undone, nothing out of order)."""
    v = []
    when = {k[1]: t for k, t in bank.effects.items() if k[0] == gid and k[2] is Op.ACTION}
    for step, pres in saga_prereqs(custom_data, concurrent, steps).items():
        a = f"{step + 1:02d}"
        if a not in when:
            continue
        for p in pres:
            b = f"{p + 1:02d}"
            if when.get(b, when[a]) >= when[a]:
                then = f"at {when[b]:.3f}" if b in when else "never"
                v.append(f"{gid}: action {a} took effect at {when[a]:.3f}, its prerequisite "
                         f"{b} {then}")
    return v


def _registered(gid: str, trans_type: TransType, status: Status, branches: list[Branch],
                registered: list[str], eff: dict[tuple[str, str, Op], float]) -> list[str]:
    """TCC and XA: every branch answered 200 ends confirmed or cancelled (committed or
    rolled back); the forward op ran where its first phase did, the backward one undid
    exactly the first phases that ran."""
    v = []
    first, forward, backward = PHASES[trans_type]
    ops = {(b.branch_id, b.op): b.status for b in branches}
    for bid in registered:
        done = forward if status is OK else backward
        if ops.get((bid, done)) is not OK:
            v.append(f"{gid}: {status}, but registered branch {bid} never got its {done} "
                     f"({ops.get((bid, done))})")
    for bid in sorted({b.branch_id for b in branches}):
        tried = (gid, bid, first) in eff
        fwd, back = (gid, bid, forward) in eff, (gid, bid, backward) in eff
        if status is OK and not (fwd and tried):
            v.append(f"{gid}: succeeded; branch {bid} {first}={tried}, {forward}={fwd}")
        if status is F and (tried != back or fwd):
            v.append(f"{gid}: failed; branch {bid} {first}={tried}, {backward}={back}, "
                     f"{forward}={fwd}")
    return v


def _msg(gid: str, status: Status, steps: list[str], eff: dict[tuple[str, str, Op], float],
         bank: Bank) -> list[str]:
    committed = bank.barrier.get((gid, MSG_BRANCH, Op.MSG)) == "commit"
    applied = [s for s in steps if (gid, s, Op.ACTION) in eff]
    if status is OK and (not committed or applied != steps):
        return [f"{gid}: succeeded; local commit {committed}, actions applied {applied}"]
    if status is F and (committed or applied):
        return [f"{gid}: failed; local commit {committed}, actions applied {applied}"]
    return []


def _workflow(trans: Transaction, branches: list[Branch], spec: TxSpec, bank: Bank,
              out: Outcomes) -> list[str]:
    """A workflow did what its code says, once: all actions and the commits if it
    succeeded; if a step failed for good, the actions before it and then their rollbacks
    newest first; every acknowledged record kept as it was; the result is the recorded
    results' (a replay returned them, not new ones)."""
    gid, v = trans.gid, []
    eff = {(k[1], k[2]): t for k, t in bank.effects.items() if k[0] == gid}
    steps = [f"{i + 1:02d}" for i in range(spec.steps)]
    failing = min(spec.failing, default=spec.steps)
    ran = [s for s in steps if (s, Op.ACTION) in eff]
    if ran != steps[:failing]:
        v.append(f"{gid}: {trans.status}; actions applied {ran}, step {failing + 1} fails")
    commits = [s for s in steps if (s, Op.COMMIT) in eff]
    undone = [s for s in steps if (s, Op.ROLLBACK) in eff]
    want = (commit_steps(spec), []) if trans.status is OK else ([], ran)
    if (commits, undone) != want or trans.status is not (OK if failing == spec.steps else F):
        v.append(f"{gid}: {trans.status}; commits {commits}, rollbacks {undone}, "
                 f"expected {want}")
    for forward, phase in ((False, Op.ROLLBACK), (False, Op.COMMIT), (True, Op.ACTION)):
        times = [eff[s, phase] for s in steps if (s, phase) in eff]
        if times != sorted(times, reverse=not forward):
            v.append(f"{gid}: {phase}s applied out of order ({times})")
    rows = {(b.branch_id, b.op): (b.status, b.data) for b in branches}
    for (g, bid, op), (rec, _) in out.recorded.items():
        if g == gid and rows.get((bid, op)) != rec:
            v.append(f"{gid}: step {bid} {op} recorded {rec}, stored {rows.get((bid, op))}")
    results = [rows[s, Op.ACTION][1] for s in ran if (s, Op.ACTION) in rows]
    if trans.result != result_of(results):
        v.append(f"{gid}: result {trans.result!r}, the recorded steps give "
                 f"{result_of(results)!r}")
    return v
