"""Group commit: writes that are ready at the same moment share one round trip.

A write goes out at once while fewer than `lanes` round trips of its kind are in flight;
otherwise it waits in a queue, and when a round trip returns, everything queued by then
leaves together in the next one. There is no timer: a write waits at most for one round
trip to come back, and under light load it waits for nothing and travels alone.

The batch function answers each write on its own (a compare-and-set outcome per item).
Two writes to the same key never share a batch (the later one goes in a following
batch), so a batch statement never touches one row twice and each item's outcome is
exactly what the same call alone would have given. Nothing here knows SQL.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from dtmx.errors import StoreError, StoreUnavailable

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class GroupCommit(Generic[ItemT, ResultT]):
    """Batches calls of `one` into calls of `many`.

    `one(item)` writes one item (the unbatched path, used for a batch of one and to
    attribute an error of a batch to its items); `many(items)` writes several in one
    round trip and returns their results in order. `key(item)` names the row an item
    writes. `lanes` round trips may be in flight at once, each carrying up to `max_batch`.
    """

    def __init__(
        self,
        *,
        one: Callable[[ItemT], Awaitable[ResultT]],
        many: Callable[[Sequence[ItemT]], Awaitable[list[ResultT]]],
        key: Callable[[ItemT], Hashable],
        lanes: int = 2,
        max_batch: int = 64,
    ) -> None:
        if lanes < 1 or max_batch < 1:
            raise ValueError("lanes and max_batch must be at least 1")
        self._one, self._many, self._key = one, many, key
        self._lanes, self._max = lanes, max_batch
        self._queue: deque[tuple[ItemT, asyncio.Future[ResultT]]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: round trips that carried more than one item, and the items they carried
        self.batches = 0
        self.batched_items = 0

    async def submit(self, item: ItemT) -> ResultT:
        """Write `item` (alone or with others) and return its own result."""
        fut: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._in_flight < self._lanes:
            self._launch()
        return await fut

    def _take_batch(self) -> list[tuple[ItemT, asyncio.Future[ResultT]]]:
        batch: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        keys: set[Hashable] = set()
        later: deque[tuple[ItemT, asyncio.Future[ResultT]]] = deque()
        while self._queue and len(batch) < self._max:
            entry = self._queue.popleft()
            if entry[1].done():  # the caller gave up (cancelled) before it was sent
                continue
            k = self._key(entry[0])
            if k in keys:
                later.append(entry)
            else:
                keys.add(k)
                batch.append(entry)
        later.extend(self._queue)
        self._queue = later
        return batch

    def _launch(self) -> None:
        batch = self._take_batch()
        if not batch:
            return
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        try:
            if len(batch) == 1:
                await self._settle_one(*batch[0])
            else:
                await self._settle_many(batch)
        finally:
            self._in_flight -= 1
            while self._queue and self._in_flight < self._lanes:
                self._launch()

    async def _settle_one(self, item: ItemT, fut: asyncio.Future[ResultT]) -> None:
        try:
            result = await self._one(item)
        except BaseException as e:  # the caller's error, raised where it waits
            _fail(fut, e)
            if not isinstance(e, Exception):
                raise
        else:
            if not fut.done():
                fut.set_result(result)

    async def _settle_many(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await self._many(items)
        except StoreUnavailable as e:
            # the outcome is unknown for all of them, as it would be for each alone
            for _, fut in batch:
                _fail(fut, e)
            return
        except StoreError:
            # the batch was rolled back as a whole: redo each alone, so that an error
            # (a duplicate, a bad value) reaches only the caller it belongs to
            await asyncio.gather(*(self._settle_one(item, fut) for item, fut in batch))
            return
        except BaseException as e:
            for _, fut in batch:
                _fail(fut, e)
            if not isinstance(e, Exception):
                raise
            return
        self.batches += 1
        self.batched_items += len(batch)
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    async def close(self) -> None:
        """Wait for the round trips in flight (their callers get their answers)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _fail(fut: asyncio.Future[ResultT], e: BaseException) -> None:
    if fut.done():
        return
    if isinstance(e, asyncio.CancelledError):
        fut.cancel()
    else:
        fut.set_exception(e)
