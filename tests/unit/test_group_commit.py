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


async def test_writes_queued_behind_a_round_trip_share_the_next() -> None:
    b = Backend()
    gc = _gc(b)
    b.gate.clear()
    first = asyncio.create_task(gc.submit("a"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(gc.submit(x)) for x in ("b", "c", "d")]
    await asyncio.sleep(0)
    assert b.trips == [["a"]]  # the others wait for the lane, not for a timer
    b.gate.set()
    assert await first == "A"
    assert await asyncio.gather(*rest) == ["B", "C", "D"]
    assert b.trips == [["a"], ["b", "c", "d"]]
    assert (gc.batches, gc.batched_items) == (1, 3)


async def test_one_key_never_twice_in_a_batch() -> None:
    b = Backend()
    gc = _gc(b)
    b.gate.clear()
    first = asyncio.create_task(gc.submit("a:1"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(gc.submit(x)) for x in ("g:1", "g:2", "h:1")]
    await asyncio.sleep(0)
    b.gate.set()
    await asyncio.gather(first, *rest)
    assert b.trips == [["a:1"], ["g:1", "h:1"], ["g:2"]]


async def test_a_failed_batch_is_redone_item_by_item() -> None:
    b = Backend()
    gc = _gc(b)
    b.gate.clear()
    first = asyncio.create_task(gc.submit("a"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(gc.submit(x)) for x in ("b", "bad", "c")]
    await asyncio.sleep(0)
    b.gate.set()
    await first
    got = await asyncio.gather(*rest, return_exceptions=True)
    assert got[0] == "B" and got[2] == "C"
    assert isinstance(got[1], StoreError) and "refused bad" in str(got[1])


async def test_an_unavailable_store_fails_the_whole_batch() -> None:
    b = Backend()
    gc = _gc(b)
    b.gate.clear()
    first = asyncio.create_task(gc.submit("a"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(gc.submit(x)) for x in ("b", "c")]
    await asyncio.sleep(0)
    b.fail_many = StoreUnavailable("gone")
    b.gate.set()
    await first
    got = await asyncio.gather(*rest, return_exceptions=True)
    assert all(isinstance(g, StoreUnavailable) for g in got)
    assert b.trips == [["a"], ["b", "c"]]  # not redone: the outcome is unknown


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
