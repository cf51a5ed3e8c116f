"""The invariants, checked after quiescence from the server's answers, the bank's database
and the bank's call log. Pure: takes what was gathered, returns the violations."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from chaos.workload import EXPECTED, Kind, Transfer

FINAL = ("succeed", "failed")
Effect = tuple[str, str]  # (branch_id, op)

_SAGA_OK = {("01", "action"), ("02", "action")}
_TCC_OK = {("01", "try"), ("01", "confirm"), ("02", "try"), ("02", "confirm")}
_MSG_OK = {("00", "msg"), ("01", "action")}
_UNDO = {"action": "compensate", "try": "cancel"}
#: a workflow's rollback callbacks call the same routes with op rollback
_WF_UNDO = {"action": "rollback"}


@dataclass
class Findings:
    """Violations (each one a line) and what the checks counted."""

    violations: list[str] = field(default_factory=list)
    overlaps_under_skew: int = 0
    server_calls: int = 0
    #: branch calls by the process that made them (server0, client, ...)
    sources: Counter[str] = field(default_factory=Counter)

    #: violations by kind (stuck, lost, outcome, effects, money, two_owners, unidentified,
    #: barrier)
    kinds: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, text: str) -> None:
        self.kinds[kind] += 1
        self.violations.append(text)


def family(kind: Kind) -> str:
    return kind.value.split("_", 1)[0]


def check(transfers: list[Transfer], statuses: dict[str, str | None],
          effects: list[tuple[str, str, str, int, int]], balances: dict[int, int],
          initial: int, calls: list[dict[str, Any]], skewed: set[str],
          request_timeout: float, names: dict[int, str]) -> Findings:
    """All invariants; `effects` rows are (gid, branch_id, op, account, delta); each call
    carries the `owner` token its server sent ("" from the workload), `names` says which
    server each pid was."""
    f = Findings()
    for c in calls:
        c["src"] = caller(c, names)
    by_gid: dict[str, Counter[Effect]] = defaultdict(Counter)
    for gid, bid, op, _acc, _delta in effects:
        by_gid[gid][(bid, op)] += 1
    expected = dict.fromkeys(balances, initial)
    for t in transfers:
        status = statuses.get(t.gid)
        got = by_gid.pop(t.gid, Counter())
        _outcome(f, t, status)
        _effects(f, t, status, got)
        if status == "succeed":
            expected[t.src] -= t.amount
            expected[t.dst] += t.amount
    for gid in by_gid:
        f.add("effects", f"{gid}: effects of a transaction nobody submitted: {dict(by_gid[gid])}")
    for acc in sorted(balances):
        if balances[acc] != expected[acc]:
            f.add("money", f"account {acc}: balance {balances[acc]}, the final outcomes say "
                  f"{expected[acc]}")
    total, want = sum(balances.values()), initial * len(balances)
    if total != want:
        f.add("money", f"money not conserved: {total} in the bank, {want} put in")
    # a transaction the clock-jumped server created or called carries its wrong times
    # (create time, leases): every server then judges its timeout and lease by them
    skewed_gids = {t.gid for t in transfers if f"server{t.server}" in skewed}
    skewed_gids |= {c["gid"] for c in calls if str(c["src"]).split("@")[0] in skewed}
    _overlaps(f, calls, skewed, request_timeout, skewed_gids)
    return f


def caller(c: dict[str, Any], names: dict[int, str]) -> str:
    """`server<i>@<pid>` from the call's owner token (<host>:<pid>:<tag>:<n>), or `client`
    for a call without one (the workload's tries and workflow steps)."""
    owner = str(c.get("owner") or "")
    if not owner:
        return "client"
    parts = owner.rsplit(":", 3)
    pid = int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else -1
    return f"{names.get(pid, 'unknown')}@{pid}"


#: the ops the workload calls itself: TCC tries (its own and the late ones), and the msg's
#: QueryPrepared, which `do_and_submit` asks after its submit erred (as DTM's SDK does)
_CLIENT_OPS = {"try", "msg"}


def _outcome(f: Findings, t: Transfer, status: str | None) -> None:
    if status is None:
        if t.owed:
            f.add("lost", f"{t.gid} ({t.kind}): acknowledged ({t.owed} owed) but not in the store")
        return
    if status not in FINAL:
        f.add("stuck", f"{t.gid} ({t.kind}): stuck in {status}")
    elif t.owed and status != t.owed:
        f.add("outcome", f"{t.gid} ({t.kind}): ended {status}, the client was told {t.owed}")
    elif family(t.kind) == "workflow" and status != EXPECTED[t.kind]:
        # only the bank's refusal fails a workflow: its kind says how it must end, also
        # when its client heard nothing (an error before or after its prepare)
        f.add("outcome", f"{t.gid} ({t.kind}): ended {status}, want {EXPECTED[t.kind]}")


def _effects(f: Findings, t: Transfer, status: str | None, got: Counter[Effect]) -> None:
    for eff, n in got.items():
        if n > 1:
            f.add("effects", f"{t.gid} ({t.kind}): {eff} applied {n} times")
    have = set(got)
    fam = family(t.kind)
    if status == "succeed":
        want = {"saga": _SAGA_OK, "tcc": _TCC_OK, "msg": _MSG_OK, "workflow": _SAGA_OK}[fam]
        if have != want:
            f.add("effects", f"{t.gid} ({t.kind}) succeeded: effects {sorted(have)}, "
                  f"want {sorted(want)}")
        return
    if status not in FINAL and status is not None:
        return  # reported as stuck
    if fam == "msg" or status is None:
        if have:
            f.add("effects", f"{t.gid} ({t.kind}) {status or 'absent'}: "
                  f"effects {sorted(have)}, want none")
        return
    # failed saga / TCC / workflow: every first-phase effect undone, no confirm
    for bid in ("01", "02"):
        for first, undo in (_WF_UNDO if fam == "workflow" else _UNDO).items():
            if ((bid, first) in have) != ((bid, undo) in have):
                f.add("effects", f"{t.gid} ({t.kind}) failed: branch {bid} has {sorted(have)}: "
                      f"{first} and {undo} do not match")
    if any(op == "confirm" for _, op in have):
        f.add("effects", f"{t.gid} ({t.kind}) failed: a confirm was applied")


def _overlaps(f: Findings, calls: list[dict[str, Any]], skewed: set[str],
              request_timeout: float, skewed_gids: set[str]) -> None:
    """Two claims calling branches of one transaction at the same time.

    Every call a server makes names its claim (the owner token of `BranchOwnerHeader`:
    a fresh one per claim, also for a server that claims again). Leases keep a live
    owner's claim from running out while it calls (it is extended before each call to
    more than a request timeout), so two tokens overlapping on one gid means two owners
    at once, from two servers or from one server's stale and new claims, unless one of
    them is the server whose clock was moved (its leases are wrong by the jump, by design
    of any lease), or the transaction was created or touched by that server: its create
    time and leases are then wrong for all.
    A server stops waiting for a call after the request timeout, so a call counts as the
    server's from its start to its end or to the request timeout, whichever comes first:
    the bank may go on with it (a killed server's call too), which is the barrier's
    business, not a second owner.
    """
    per_gid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in calls:
        f.sources[str(c["src"]).split("@")[0] + (" (redelivered)" if c["dup"] else "")] += 1
        if c["dup"]:
            continue
        if c.get("owner"):
            per_gid[c["gid"]].append(c)
            if str(c["src"]).startswith("unknown"):
                f.add("unidentified", f"{c['gid']}: {c['branch_id']} {c['op']} called under "
                      f"{c['owner']}, a process no server of this run was")
        elif c["op"] not in _CLIENT_OPS and c.get("trans_type") != "workflow":
            f.add("unidentified", f"{c['gid']}: {c['branch_id']} {c['op']} called without "
                  "an owner token: no server of ours made it, nor the workload")
    f.server_calls = sum(len(v) for v in per_gid.values())
    for gid, cs in per_gid.items():
        cs.sort(key=lambda c: c["t0"])
        for i, a in enumerate(cs):
            a_end = min(a["t1"], a["t0"] + request_timeout)
            for b in cs[i + 1:]:
                if b["t0"] >= a_end:
                    break
                if a["owner"] == b["owner"]:
                    continue  # one claim: the lease covers its calls
                if gid in skewed_gids:
                    f.overlaps_under_skew += 1
                    continue
                f.add("two_owners",
                      f"{gid}: {a['src']} ({a['branch_id']} {a['op']}) and {b['src']} "
                      f"({b['branch_id']} {b['op']}) called at the same time "
                      f"[{a['t0']:.3f}, {a['t1']:.3f}] / [{b['t0']:.3f}, {b['t1']:.3f}]")
