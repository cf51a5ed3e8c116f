"""Every time rule of the server, in one place: timeouts, leases, retry intervals. Pure.

A transaction's own options override the server's settings where DTM lets them
(`retry_interval`, `request_timeout`, `timeout_to_fail`); everything else is `Timing`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtmx.core.models import Status, Transaction, TransType


@dataclass(slots=True, frozen=True)
class Timing:
    """The server's time settings (seconds). Tests shorten them; production keeps DTM's."""

    retry_interval: float = 10.0
    max_retry_interval: float = 3600.0
    request_timeout: float = 3.0
    timeout_to_fail: float = 35.0
    #: How long a claim holds by default (a transaction's lease is never shorter).
    lease: float = 30.0


def base_interval(trans: Transaction, timing: Timing) -> float:
    """The retry interval the backoff starts from (and returns to after progress)."""
    if trans.options.retry_interval > 0:
        return float(trans.options.retry_interval)
    return timing.retry_interval


def request_timeout(trans: Transaction, timing: Timing) -> float:
    """How long one branch call may take."""
    if trans.options.request_timeout > 0:
        return float(trans.options.request_timeout)
    return timing.request_timeout


def lease(trans: Transaction, timing: Timing) -> float:
    """How long a claim on `trans` holds: it must outlast one round of branch calls."""
    return max(timing.lease, 2 * request_timeout(trans, timing) + 1)


def hand_back_at(trans: Transaction, now: float, timing: Timing) -> float:
    """When a transaction handed back by a process that lacks one of its local functions
    is due again: one base retry interval on, as if its call had been retried, so the
    process that has the functions finds it at its next poll after that while the ones
    that do not are not kept claiming it (no backoff: nothing failed)."""
    return now + base_interval(trans, timing)


def claim_until(now: float, timing: Timing) -> float:
    """When a claim made now with the default lease (by the poller, or a take of a
    prepared transaction) runs out; a run extends it at once if its transaction needs more."""
    return now + timing.lease


def expire_every(finished_ttl: float, poll_interval: float) -> float:
    """How often the poller deletes finished transactions older than `finished_ttl`: a
    quarter of it, never more often than it polls, at least once a minute."""
    return min(60.0, max(finished_ttl / 4, poll_interval))


def needs_longer_lease(trans: Transaction, timing: Timing) -> bool:
    """Whether a claim made with the default lease must be extended before `trans` runs."""
    return lease(trans, timing) > timing.lease


def lease_running_out(trans: Transaction, now: float, timing: Timing) -> bool:
    """Whether less than half of the claim is left: a round of calls takes at most a
    request timeout, under half a lease, so the claim is extended before the next round."""
    return (trans.next_cron_time or 0.0) - now < lease(trans, timing) / 2


def first_due(trans: Transaction, now: float, timing: Timing) -> float:
    """When a transaction stored just now is next looked at by a poller: a prepared one
    when it times out (nothing happens to it before), a prepared workflow after one retry
    interval (it never times out: DTM's cron resumes it through its callback every retry
    interval), any other when its claim ends."""
    if trans.status is Status.PREPARED and trans.trans_type is TransType.WORKFLOW:
        return now + base_interval(trans, timing)
    if trans.status is Status.PREPARED:
        return now + timeout_of(trans, timing)
    return now + lease(trans, timing)


def timeout_of(trans: Transaction, timing: Timing) -> float:
    """Seconds after creation at which the transaction fails; 0 = never.

    A saga never times out unless asked to; other types fall back to the server default.
    """
    if trans.options.timeout_to_fail > 0:
        return float(trans.options.timeout_to_fail)
    if trans.trans_type is TransType.SAGA:
        return 0.0
    return timing.timeout_to_fail


def timeout_reason(trans: Transaction, now: float, timing: Timing) -> str:
    """The rollback reason if `trans` has timed out at `now`, else ''."""
    t = timeout_of(trans, timing)
    if t and now >= trans.create_time + t:
        return f"Timeout after {t:g} seconds"
    return ""


def next_interval(current: float, base: float, cap: float, *, backoff: bool) -> float:
    """Exponential backoff from `base` after errors, capped; `base` again after progress."""
    if not backoff:
        return base
    return min(max(current, base) * 2, cap)


def retry_interval(trans: Transaction, timing: Timing, *, backoff: bool) -> float:
    """The interval until the next attempt at `trans` after an unsettled round."""
    return next_interval(trans.next_cron_interval, base_interval(trans, timing),
                         timing.max_retry_interval, backoff=backoff)


def reset_cron_after(timeout_to_fail: float) -> int:
    """`resetCronTime`'s default `timeout`, as DTM's: three times the server's TimeoutToFail,
    in whole seconds, capped to the int32 every other seconds value is held to."""
    return min(int(3 * timeout_to_fail), 2**31 - 1)
