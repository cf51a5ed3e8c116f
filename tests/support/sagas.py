"""Saga streams for the kill tests: good sagas succeed, bad ones are refused by step 2."""

from __future__ import annotations

from typing import Any

from tests.support.busi import BusiState

OK_STEPS = (("TransOut", "TransOutRevert"), ("TransIn", "TransInRevert"))
# step 2's action is switched to FAILURE by the tests: the saga rolls back
BAD_STEPS = (("TransInTry", "TransInCancel"), ("TransOutTry", "TransOutCancel"))


def body(gid: str, url: str, steps: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {"gid": gid, "trans_type": "saga", "payloads": ["{}"] * len(steps),
            "steps": [{"action": f"{url}/{a}", "compensate": f"{url}/{c}"} for a, c in steps]}


def unfinished(state: BusiState, acked: list[tuple[str, bool]]) -> list[str]:
    """Acknowledged sagas whose last effect has not been applied yet."""
    return [g for g, good in acked
            if state.applied_count("TransIn" if good else "TransInCancel", g) == 0]


def assert_applied_exactly_once(state: BusiState, acked: list[tuple[str, bool]]) -> None:
    """Every effect a saga's outcome requires applied once; nothing it must not do, never."""
    for gid, good in acked:
        if good:
            assert state.applied_count("TransOut", gid) == 1, gid
            assert state.applied_count("TransIn", gid) == 1, gid
            assert state.count("TransOutRevert", gid) == 0, gid
        else:
            assert state.applied_count("TransInTry", gid) == 1, gid
            assert state.applied_count("TransInCancel", gid) == 1, gid
            assert state.applied_count("TransOutTry", gid) == 0, gid
    assert state.overlaps == []  # no two workers ever ran one branch at the same time
