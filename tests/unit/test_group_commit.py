"""GroupCommit without a database: when writes share a round trip, and when they do not."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from dtmx.errors import StoreError, StoreUnavailable
from dtmx.stores.sql.group_commit import GroupCommit


class Backend:
    """Records each round trip; `gate` holds them until the test lets them return."""

    def __init__(self) -> None:
        self.trips: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_many: BaseException | None = None

    async def one(self, item: str) -> str:
        self.trips.append([item])
        await self.gate.wait()
        if item.startswith("bad"):
            raise StoreError(f"refused {item}")
        return item.upper()

    async def many(self, items: Sequence[str]) -> list[str]:
        self.trips.append(list(items))
        await self.gate.wait()
        if self.fail_many is not None:
            raise self.fail_many
        if any(i.startswith("bad") for i in items):
            raise StoreError("the whole batch is rolled back")
        return [i.upper() for i in items]


def _gc(b: Backend, lanes: int = 1) -> GroupCommit[str, str]:
    return GroupCommit(one=b.one, many=b.many, key=lambda i: i.split(":")[0], lanes=lanes)


async def test_a_lone_write_goes_at_once_and_alone() -> None:
    b = Backend()
    assert await _gc(b).submit("a") == "A"
    assert b.trips == [["a"]]


async def _queued_behind_a_held_write(
    b: Backend, gc: GroupCommit[str, str], queued: Sequence[str]
) -> tuple[list[list[str]], list[str | BaseException]]:
    """Hold the lane with a write of "a", queue `queued` behind it, then let the round trips
    return: the round trips seen while "a" was held, and the queued writes' answers."""
    b.gate.clear()
    first = asyncio.create_task(gc.submit("a"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(gc.submit(x)) for x in queued]
    await asyncio.sleep(0)
    held = [list(t) for t in b.trips]
    b.gate.set()
    assert await first == "A"
    return held, await asyncio.gather(*rest, return_exceptions=True)


def _answer(got: str | BaseException) -> str:
    """An answer as text to compare: the result, or the error's type and message."""
    return got if isinstance(got, str) else f"{type(got).__name__}: {got}"


@pytest.mark.parametrize(
    ("queued", "fail_many", "answers", "trips"),
    [
        # no timer: the writes wait for the lane, then share the next round trip
        (["b", "c", "d"], None, ["B", "C", "D"], [["b", "c", "d"]]),
        # one key never twice in a batch: g:2 waits for the round trip after g:1's
        (["g:1", "g:2", "h:1"], None, ["G:1", "G:2", "H:1"], [["g:1", "h:1"], ["g:2"]]),
        # a batch rolled back as a whole is redone item by item: only "bad" fails
        (["b", "bad", "c"], None, ["B", "StoreError: refused bad", "C"],
         [["b", "bad", "c"], ["b"], ["bad"], ["c"]]),
        # an unavailable store fails the whole batch, not redone: the outcome is unknown
        (["b", "c"], StoreUnavailable("gone"),
         ["StoreUnavailable: gone", "StoreUnavailable: gone"], [["b", "c"]]),
    ],
    ids=["share-next-trip", "one-key-once-per-batch", "failed-batch-redone", "unavailable"],
)
async def test_writes_queued_behind_a_round_trip(
    queued: list[str],
    fail_many: BaseException | None,
    answers: list[str],
    trips: list[list[str]],
) -> None:
    b = Backend()
    b.fail_many = fail_many
    gc = _gc(b)
    held, got = await _queued_behind_a_held_write(b, gc, queued)
    assert held == [["a"]]  # the others wait for the lane, not for a timer
    assert [_answer(g) for g in got] == answers
    assert b.trips == [["a"], *trips]


async def test_a_batch_is_counted() -> None:
    b = Backend()
    gc = _gc(b)
    await _queued_behind_a_held_write(b, gc, ["b", "c", "d"])
    assert (gc.batches, gc.batched_items) == (1, 3)


async def test_lanes_send_in_parallel() -> None:
    b = Backend()
    gc = _gc(b, lanes=2)
    b.gate.clear()
    tasks = [asyncio.create_task(gc.submit(x)) for x in ("a", "b", "c", "d")]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert b.trips == [["a"], ["b"]]  # two lanes: two round trips at once, c and d wait
    b.gate.set()
    assert await asyncio.gather(*tasks) == ["A", "B", "C", "D"]
    assert b.trips == [["a"], ["b"], ["c", "d"]]


async def test_a_cancelled_caller_is_not_sent() -> None:
    b = Backend()
    gc = _gc(b)
    b.gate.clear()
    first = asyncio.create_task(gc.submit("a"))
    await asyncio.sleep(0)
    gone = asyncio.create_task(gc.submit("b"))
    kept = asyncio.create_task(gc.submit("c"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    b.gate.set()
    await first
    assert await kept == "C"
    assert b.trips == [["a"], ["c"]]
    with pytest.raises(asyncio.CancelledError):
        await gone


def test_lanes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        GroupCommit(one=Backend().one, many=Backend().many, key=str, lanes=0)
