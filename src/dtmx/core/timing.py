"""Time rules shared by processors and the engine: timeouts and retry intervals."""

from __future__ import annotations

from dtmx.core.models import Transaction, TransType
from dtmx.core.plan import Defaults


def timeout_of(trans: Transaction, defaults: Defaults) -> float:
    """Seconds after creation at which the transaction fails; 0 = never.

    A saga never times out unless asked to; other types fall back to the server default.
    """
    if trans.options.timeout_to_fail > 0:
        return float(trans.options.timeout_to_fail)
    if trans.trans_type is TransType.SAGA:
        return 0.0
    return defaults.timeout_to_fail


def timeout_reason(trans: Transaction, now: float, defaults: Defaults) -> str:
    t = timeout_of(trans, defaults)
    if t and now >= trans.create_time + t:
        return f"Timeout after {t:g} seconds"
    return ""


def next_interval(current: float, base: float, cap: float, *, backoff: bool) -> float:
    """Exponential backoff from `base` after errors, capped; `base` again after progress."""
    if not backoff:
        return base
    return min(max(current, base) * 2, cap)
