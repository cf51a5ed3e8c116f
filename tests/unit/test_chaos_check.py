"""The chaos harness's checks catch what they promise to: fed a made-up run with one defect
each, they name it; fed a clean run, they find nothing."""

from __future__ import annotations

from typing import Any

from chaos.check import check
from chaos.faults import branch_fault, schedule
from chaos.workload import Kind, Transfer

INITIAL = 1000


def saga(gid: str = "g1", owed: str = "succeed") -> Transfer:
    return Transfer(1, gid, Kind.SAGA, src=0, dst=1, amount=10, server=0, owed=owed)


def ok_effects(gid: str = "g1") -> list[tuple[str, str, str, int, int]]:
    return [(gid, "01", "action", 0, -10), (gid, "02", "action", 1, 10)]


NAMES = {1: "server0", 2: "server1", 3: "server2"}


def call(src: str, t0: float, t1: float, gid: str = "g1", claim: int = 1,
         op: str = "action") -> dict[str, Any]:
    """A call from `src` ("server0@1": pid 1; "" for the workload's own) under its claim."""
    pid = src.partition("@")[2]
    owner = f"host:{pid}:ab12:{claim}" if src else ""
    return {"gid": gid, "branch_id": "01", "op": op, "trans_type": "saga", "owner": owner,
            "t0": t0, "t1": t1, "dup": False}


def run_check(transfers: list[Transfer], statuses: dict[str, str | None],
              effects: list[tuple[str, str, str, int, int]], balances: dict[int, int],
              calls: list[dict[str, Any]] | None = None) -> list[str]:
    return check(transfers, statuses, effects, balances, INITIAL, calls or [],
                 {"server2"}, request_timeout=1.0, names=NAMES).violations


def test_a_clean_run_has_no_violation() -> None:
    assert run_check([saga()], {"g1": "succeed"}, ok_effects(), {0: 990, 1: 1010}) == []


def test_an_effect_applied_twice_is_named() -> None:
    effects = [*ok_effects(), ("g1", "02", "action", 1, 10)]
    found = run_check([saga()], {"g1": "succeed"}, effects, {0: 990, 1: 1020})
    assert any("applied 2 times" in v for v in found)
    assert any("money not conserved" in v for v in found)


def test_an_acknowledged_transaction_missing_or_unfinished_is_named() -> None:
    assert any("not in the store" in v for v in run_check([saga()], {"g1": None}, [],
                                                          {0: 1000, 1: 1000}))
    assert any("stuck in submitted" in v
               for v in run_check([saga()], {"g1": "submitted"}, [], {0: 1000, 1: 1000}))
    assert any("the client was told succeed" in v
               for v in run_check([saga()], {"g1": "failed"}, [], {0: 1000, 1: 1000}))


def test_a_failed_saga_with_an_uncompensated_action_is_named() -> None:
    t = saga(owed="failed")
    found = run_check([t], {"g1": "failed"}, [("g1", "01", "action", 0, -10)],
                      {0: 990, 1: 1000})
    assert any("action and compensate do not match" in v for v in found)


def test_two_servers_calling_one_transaction_at_once_is_named_unless_one_was_skewed() -> None:
    overlap = [call("server0@1", 0.0, 1.0), call("server1@2", 0.5, 1.5)]
    assert any("at the same time" in v for v in run_check(
        [saga()], {"g1": "succeed"}, ok_effects(), {0: 990, 1: 1010}, overlap))
    skewed = [call("server0@1", 0.0, 1.0), call("server2@3", 0.5, 1.5)]
    assert run_check([saga()], {"g1": "succeed"}, ok_effects(), {0: 990, 1: 1010},
                     skewed) == []
    # created by the clock-jumped server: its times mislead the others too
    others = [call("server0@1", 0.0, 1.0), call("server1@2", 0.5, 1.5)]
    on_skewed = saga()
    on_skewed.server = 2
    assert check([on_skewed], {"g1": "succeed"}, ok_effects(), {0: 990, 1: 1010}, INITIAL,
                 others, {"server2"}, request_timeout=1.0, names=NAMES).violations == []
    # the bank went on with a call its server had given up on (request timeout 1 s)
    late = [call("server0@1", 0.0, 4.0), call("server1@2", 2.5, 3.0)]
    assert run_check([saga()], {"g1": "succeed"}, ok_effects(), {0: 990, 1: 1010},
                     late) == []


def test_two_claims_of_one_server_overlapping_are_named_one_claim_is_not() -> None:
    ok = (saga(), {"g1": "succeed"}, ok_effects(), {0: 990, 1: 1010})
    stale = [call("server0@1", 0.0, 1.0, claim=1), call("server0@1", 0.5, 1.5, claim=2)]
    found = run_check([ok[0]], ok[1], ok[2], ok[3], stale)
    assert any("server0@1" in v and "at the same time" in v for v in found), found
    one_claim = [call("server0@1", 0.0, 1.0), call("server0@1", 0.5, 1.5)]
    assert run_check([ok[0]], ok[1], ok[2], ok[3], one_claim) == []


def test_every_call_is_named_and_a_server_op_without_an_owner_is_a_violation() -> None:
    transfers, statuses, effects, balances = [saga()], {"g1": "succeed"}, ok_effects(), \
        {0: 990, 1: 1010}
    # the workload's own: a try, and do_and_submit's QueryPrepared after a submit error
    calls = [call("server0@1", 0.0, 0.1), call("", 0.2, 0.3, op="try"),
             call("", 0.4, 0.5, op="msg")]
    f = check(transfers, statuses, effects, balances, INITIAL, calls, set(),
              request_timeout=1.0, names=NAMES)
    assert f.violations == [] and f.sources == {"server0": 1, "client": 2}
    # a pid no server of the run had is named as such, never guessed
    stranger = run_check(transfers, statuses, effects, balances, [call("server7@9", 0, 0.1)])
    assert any("a process no server of this run was" in v for v in stranger), stranger
    no_owner = [call("", 0.0, 0.1, op="compensate")]
    found = run_check(transfers, statuses, effects, balances, no_owner)
    assert any("without an owner token" in v for v in found), found


def test_a_workflow_is_held_to_its_kind_and_its_rollbacks() -> None:
    def wf(kind: Kind, owed: str = "") -> Transfer:
        return Transfer(1, "w1", kind, src=0, dst=1, amount=10, server=0, owed=owed)

    done = {0: 990, 1: 1010}
    assert run_check([wf(Kind.WORKFLOW, "succeed")], {"w1": "succeed"}, ok_effects("w1"),
                     done) == []
    # refused at TransIn: branch 01 rolled back, branch 02 never applied
    undone = [("w1", "01", "action", 0, -10), ("w1", "01", "rollback", 0, 10)]
    assert run_check([wf(Kind.WORKFLOW_REFUSED, "failed")], {"w1": "failed"}, undone,
                     {0: 1000, 1: 1000}) == []
    kept = run_check([wf(Kind.WORKFLOW_REFUSED, "failed")], {"w1": "failed"}, undone[:1],
                     {0: 990, 1: 1000})
    assert any("action and rollback do not match" in v for v in kept), kept
    # its client heard only an error, yet only a refusal may fail a workflow
    wrong = run_check([wf(Kind.WORKFLOW_CLIENT_CRASH)], {"w1": "failed"}, [],
                      {0: 1000, 1: 1000})
    assert any("ended failed, want succeed" in v for v in wrong), wrong


def test_the_seed_reproduces_the_schedule_and_the_branch_faults() -> None:
    a = schedule(7, 60, servers=3, proxy=True, clock_jumps=True)
    assert a == schedule(7, 60, servers=3, proxy=True, clock_jumps=True)
    assert a != schedule(8, 60, servers=3, proxy=True, clock_jumps=True)
    faults = [branch_fault(7, 0.5, "g", "01", "action", n) for n in range(50)]
    assert faults == [branch_fault(7, 0.5, "g", "01", "action", n) for n in range(50)]
