"""The time rules (core/timing.py) are pure: settings and a transaction give numbers."""

from __future__ import annotations

from dtmx.core import timing as tm
from dtmx.core.models import Status, Transaction, TransOptions, TransType

T = tm.Timing(retry_interval=10, max_retry_interval=60, request_timeout=3, timeout_to_fail=35,
              lease=30)


def trans(**opts: object) -> Transaction:
    return Transaction(gid="g", trans_type=TransType.SAGA, status=Status.SUBMITTED,
                       options=TransOptions(**opts))  # type: ignore[arg-type]


def test_options_override_the_settings() -> None:
    assert tm.base_interval(trans(), T) == 10 and tm.base_interval(trans(retry_interval=4), T) == 4
    assert tm.request_timeout(trans(), T) == 3
    assert tm.request_timeout(trans(request_timeout=9), T) == 9


def test_a_lease_outlasts_two_request_timeouts() -> None:
    assert tm.lease(trans(), T) == 30 and not tm.needs_longer_lease(trans(), T)
    slow = trans(request_timeout=20)
    assert tm.lease(slow, T) == 41 and tm.needs_longer_lease(slow, T)


def test_the_claim_is_extended_once_half_of_it_is_gone() -> None:
    t = trans()
    t.next_cron_time = 100.0
    assert not tm.lease_running_out(t, 85.0, T)  # 15 s of 30 left
    assert tm.lease_running_out(t, 85.1, T)


def test_retry_interval_backs_off_to_the_cap_and_resets_after_progress() -> None:
    t = trans()
    t.next_cron_interval = 40
    assert tm.retry_interval(t, T, backoff=True) == 60
    assert tm.retry_interval(t, T, backoff=False) == 10


def test_claims_and_expiry_cadence() -> None:
    assert tm.claim_until(100.0, T) == 130.0
    assert tm.expire_every(86400, 1) == 60  # at least once a minute
    assert tm.expire_every(8, 1) == 2  # a quarter of a short TTL
    assert tm.expire_every(1, 3) == 3  # never more often than the poll


def test_reset_cron_after_is_three_timeouts_capped_to_int32() -> None:
    from dtmx.core.timing import reset_cron_after

    assert reset_cron_after(35) == 105  # DTM's default: 3 x TimeoutToFail
    assert reset_cron_after(1.5) == 4
    assert reset_cron_after(2**31) == 2**31 - 1
