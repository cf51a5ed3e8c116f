"""The one storage protocol every backend implements (SQLite, MySQL, PostgreSQL, Redis).

Rules for implementations:
- Every method is one atomic step; `create` and `update` write the global row and its branch
  rows together (one transaction / one Lua call), so nothing is ever half-stored.
- Methods are keyword-only verbs. `None`/`False` means only "not there / condition not met";
  every failure raises a `dtmx.errors.StoreError` translated from the driver, once, here.
- `roundtrips` counts calls that reach the backend (a statement batch in one transaction
  counts once), so benchmarks can report store round trips per transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from dtmx.core.models import (
    KV,
    Branch,
    CallRecord,
    Change,
    ScanFilter,
    Status,
    Transaction,
    TransType,
)


@runtime_checkable
class Store(Protocol):
    """Durable state of transactions, branches and key-value records; every backend passes the
    contract suite.
    """
    roundtrips: int

    async def open(self) -> None:
        """Connect, create or check the schema. Raises StoreUnavailable if unreachable."""

    async def close(self) -> None:
        """Release connections; the store is not used after."""

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the backend answers."""

    # ---- transactions -------------------------------------------------------------
    async def create(self, *, trans: Transaction, branches: Sequence[Branch]) -> bool:
        """Insert a new global transaction and its branches atomically.

        Returns False (writing nothing) when the gid already exists.
        """

    async def get(self, *, gid: str) -> Transaction | None:
        """The transaction with `gid`, or None."""

    async def get_branches(self, *, gid: str) -> list[Branch]:
        """Branches in insertion (registration) order."""

    async def update(
        self,
        *,
        gid: str,
        now: float,
        expect_status: Status,
        expect_owner: str | None,
        change: Change,
        expect_type: TransType | None = None,
    ) -> bool:
        """Compare-and-set: apply `change` (global fields and branch statuses) atomically
        only if the stored status equals `expect_status`, when `expect_owner` is not None
        the stored owner equals it, and when `expect_type` is not None the transaction is of
        that type. Returns False and writes nothing otherwise.
        Sets update_time to `now` (and finish_time / rollback_time on SUCCEED / FAILED).

        In the same atomic step, `change.calls` are appended to the call history: a call
        numbered by the engine (`CallRecord.attempt` >= 1) keeps its number, attempt 1 is
        kept with its branch op's row (not kept if there is none) and the op's stored
        count (`Branch.calls`) becomes the highest number given; a call given as 0 gets the
        next number after the op's calls in the history (1 for the first; a branch op need
        not exist). The branch op then keeps its first call and its newest
        `change.keep_calls` - 1."""

    async def take(
        self,
        *,
        gid: str,
        now: float,
        expect_status: Status,
        expect_type: TransType | None = None,
        change: Change,
    ) -> tuple[Transaction, list[Branch]] | None:
        """Compare-and-set an existing transaction and read it back, in one round trip.

        Applies `change` to the global row exactly as `update` would (update_time = `now`,
        finish_time / rollback_time on SUCCEED / FAILED) only if the row exists, its status
        equals `expect_status` and, when `expect_type` is not None, its trans_type equals
        it; the owner is not compared. `change.branches` and `change.calls` must be empty
        (ValueError otherwise): branch rows are read, never written, here.

        Returns None (writing nothing) when the gid is missing or the compare fails, and
        may also when the row changed while this call waited for it (callers read it again
        and retry); otherwise the global row as stored AFTER the change and its branches in
        insertion (registration) order, both read in the same atomic step as the write: a
        branch whose `add_branches` returned True before is among them.
        """

    async def get_calls(self, *, gid: str) -> list[CallRecord]:
        """The call history of `gid` (as `update` kept it), ordered by start time, then
        branch_id, op and attempt; empty for an unknown gid. Deleted with the transaction
        (`expire_finished`, and with it on Redis when its keys expire)."""

    async def add_branches(
        self,
        *,
        gid: str,
        now: float,
        branches: Sequence[Branch],
        expect_status: Status,
        expect_type: TransType | None = None,
        max_ops: int | None = None,
    ) -> bool:
        """Insert branches only if the global transaction exists with `expect_status`,
        when `expect_type` is not None with that trans_type, and when `max_ops` is not None
        if it then holds at most `max_ops` branch ops (rows); in one round trip.

        Returns False (writing nothing) if it does not; raises DuplicateBranch if a
        (branch_id, op) exists.
        """

    async def claim_due(
        self, *, now: float, lease: float, owner: str, limit: int
    ) -> list[Transaction]:
        """Claim up to `limit` unfinished transactions whose next_cron_time <= now.

        Each claimed row gets `owner` and next_cron_time = now + lease atomically, so that
        several servers sharing the store never claim the same transaction at once.
        """

    async def oldest_due(self, *, now: float) -> float | None:
        """The earliest next_cron_time <= now among unfinished transactions (None: none due).

        For the poller-lag gauge, read at scrape time; not on the processing path.
        """

    async def reset_next_cron_time(self, *, gid: str, now: float) -> bool:
        """Make one unfinished transaction due now. False if there is no such gid."""

    async def reset_cron_time(self, *, now: float, after: float, limit: int) -> tuple[int, bool]:
        """Make unfinished transactions whose next_cron_time > now + after due now.

        Returns (how many were reset, whether more remain).
        """

    async def scan(
        self, *, position: str, limit: int, filters: ScanFilter
    ) -> tuple[list[Transaction], str]:
        """Newest first. `position` is opaque ('' = start); returns the next position,
        '' when there is nothing more."""

    async def expire_finished(self, *, before: float, limit: int) -> int:
        """Delete up to `limit` finished transactions (with their branches and calls) whose
        update_time < before. Returns how many were deleted."""

    # ---- key-value ----------------------------------------------------------------
    async def kv_find(self, *, cat: str, key: str) -> KV | None:
        """The record (cat, key), or None."""

    async def kv_scan(self, *, cat: str, position: str, limit: int) -> tuple[list[KV], str]:
        """Records of `cat` in key order from `position` ('' = start); the next position or ''."""

    async def kv_create(self, *, cat: str, key: str, value: str, now: float) -> bool:
        """False if (cat, key) exists."""

    async def kv_update(
        self, *, cat: str, key: str, value: str, expect_version: int, now: float
    ) -> bool:
        """Compare-and-set on version (version + 1 on success)."""

    async def kv_delete(self, *, cat: str, key: str) -> bool:
        """Delete (cat, key); False if there was none."""
