"""The data the engine works on: global transactions, branches, and their statuses.

Everything here is plain data. Times are float seconds since the epoch (UTC) as returned by
the injected clock, so the core never reads a clock itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# The wire's words are defined once, in dtmx.wire (shared with the SDK); re-exported here.
from dtmx.wire import Op as Op
from dtmx.wire import Protocol as Protocol
from dtmx.wire import Status as Status
from dtmx.wire import TransType as TransType

UNFINISHED = (Status.PREPARED, Status.SUBMITTED, Status.ABORTING)


class Outcome(StrEnum):
    """What a branch call (or a query_prepared call) answered."""

    SUCCESS = "success"
    FAILURE = "failure"
    ONGOING = "ongoing"
    ERROR = "error"  # transport error, timeout, unexpected status: retried with backoff


@dataclass(slots=True)
class TransOptions:
    """Per-transaction options as DTM clients send them (seconds, 0 = server default)."""

    wait_result: bool = False
    timeout_to_fail: int = 0
    request_timeout: int = 0
    retry_interval: int = 0
    retry_limit: int = 0
    retry_count: int = 0
    concurrent: bool = False
    branch_headers: dict[str, str] = field(default_factory=dict)
    passthrough_headers: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Transaction:
    """A global transaction as stored (DTM's `trans_global` row)."""

    gid: str
    trans_type: TransType
    status: Status
    protocol: Protocol = Protocol.HTTP
    query_prepared: str = ""
    custom_data: str = ""
    options: TransOptions = field(default_factory=TransOptions)
    create_time: float = 0.0
    update_time: float = 0.0
    finish_time: float | None = None
    rollback_time: float | None = None
    next_cron_interval: float = 0.0
    next_cron_time: float | None = None
    owner: str = ""
    rollback_reason: str = ""
    result: str = ""
    ext_data: str = ""
    #: The store's row id (SQL stores; 0 where there is none, as DTM on Redis). It is where
    #: the row sits, not what the transaction is, so equality ignores it.
    id: int = field(default=0, compare=False)


@dataclass(slots=True)
class Branch:
    """One operation of one branch (DTM's `trans_branch_op` row)."""

    gid: str
    branch_id: str
    op: Op
    url: str
    data: bytes
    status: Status = Status.PREPARED
    create_time: float = 0.0
    update_time: float = 0.0
    finish_time: float | None = None
    rollback_time: float | None = None
    #: How many calls of this op the store has recorded (the run numbers its next call
    #: after them, see CallRecord.attempt). Bookkeeping, not what the op is: equality
    #: ignores it.
    calls: int = field(default=0, compare=False)

    @property
    def key(self) -> tuple[str, Op]:
        """(branch_id, op): what identifies a branch row within its transaction."""
        return (self.branch_id, self.op)


@dataclass(slots=True, frozen=True)
class BranchUpdate:
    """A branch op's new status, written together with the next global change."""

    branch_id: str
    op: Op
    status: Status


@dataclass(slots=True, frozen=True)
class CallRecord:
    """One call the engine made for a branch op (a msg's query_prepared is branch "00", op
    msg): when it started, how long it took, what it answered. Written with the change that
    records its outcome; the store keeps the first and the newest of each branch op.

    `reason` is the engine's bounded explanation of a non-success (never request headers);
    `next_retry` the time the transaction was scheduled to be tried again after it (None
    when the run went on). `attempt` numbers the calls of one branch op from 1. The engine
    numbers the calls of an op that has a branch row (`Branch.calls` stored before, plus
    one per call since): the store keeps attempt 1 in that row (an op without a row must
    not be given 1) and the later ones in its history, and takes the number as given. A
    call given as 0 (an op without a branch row, such as a msg's query_prepared) is
    numbered by the store after the calls of that op in its history. Read back, a record
    always carries its number.
    """

    branch_id: str
    op: Op
    start: float
    duration: float
    outcome: Outcome
    reason: str = ""
    server: str = ""
    next_retry: float | None = None
    attempt: int = 0


#: How many call records a store keeps per branch op by default (Limits.MaxCallsPerBranch).
DEFAULT_KEEP_CALLS = 20


@dataclass(slots=True, frozen=True)
class Change:
    """One atomic change of a global transaction, applied by `Store.update`.

    Fields left as None keep their stored value. A new status of SUCCEED sets
    finish_time and FAILED sets rollback_time (to the `now` given to the store).
    """

    status: Status | None = None
    next_cron_time: float | None = None
    next_cron_interval: float | None = None
    owner: str | None = None
    rollback_reason: str | None = None
    result: str | None = None
    retry_count: int | None = None
    branches: tuple[BranchUpdate, ...] = ()
    #: calls to append to the history, each kept only if the compare-and-set matched; per
    #: branch op the store then keeps the first call and the newest `keep_calls` - 1
    calls: tuple[CallRecord, ...] = ()
    keep_calls: int = DEFAULT_KEEP_CALLS


@dataclass(slots=True, frozen=True)
class KV:
    """A row of the key-value table (topics live under cat `topics`)."""

    cat: str
    k: str
    v: str
    version: int = 1
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(slots=True, frozen=True)
class ScanFilter:
    """Filters of the `all` route; times are epoch seconds, None means unbounded;
    `gid_prefix` keeps the gids that start with it ('' = all)."""

    status: Status | None = None
    trans_type: TransType | None = None
    create_time_start: float | None = None
    create_time_end: float | None = None
    gid_prefix: str = ""
