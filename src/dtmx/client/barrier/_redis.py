"""The barrier on Redis: a checked amount adjustment and the msg query_prepared, as Lua.

Each runs as one script, so Redis's single-threaded execution gives the atomicity a SQL
transaction gives the table barrier. Keys and stored values follow DTM's Redis barrier
(`<gid>-<branch_id>-<op>-<barrier_id>`, holding "op" or "rollback"), so services using DTM's
clients and dtmx can share the keys.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from dtmx.client.barrier._algo import ORIGIN_OP

# KEYS: amount key, current op's key, origin op's key.
# ARGV: amount to add (negative to take), origin op ('' if none), key expiry in seconds.
CHECK_ADJUST_AMOUNT_LUA = """
-- dtmx barrier: adjust an amount at most once per branch op, never below zero
local balance = redis.call('GET', KEYS[1])
if balance == false or tonumber(balance) + tonumber(ARGV[1]) < 0 then
  return 'FAILURE'
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 'DUPLICATE'
end
redis.call('SET', KEYS[2], 'op', 'EX', ARGV[3])
if ARGV[2] ~= '' and redis.call('SET', KEYS[3], 'rollback', 'EX', ARGV[3], 'NX') then
  return 'NULL_COMPENSATION'
end
redis.call('INCRBY', KEYS[1], ARGV[1])
return 'APPLIED'
"""

# KEYS: the msg barrier key. ARGV: key expiry in seconds. Returns the stored value.
QUERY_PREPARED_LUA = """
-- dtmx barrier: a msg's local transaction counts as rolled back unless it already ran
local reason = redis.call('GET', KEYS[1])
if reason == false then
  redis.call('SET', KEYS[1], 'rollback', 'EX', ARGV[1])
  reason = 'rollback'
end
return reason
"""


class RedisOutcome(StrEnum):
    """What the amount script did."""

    APPLIED = "APPLIED"
    FAILURE = "FAILURE"  # key missing, or the amount would go below zero
    DUPLICATE = "DUPLICATE"  # this op already ran (or its compensation did): skipped
    NULL_COMPENSATION = "NULL_COMPENSATION"  # compensation without its origin: skipped


def barrier_key(gid: str, branch_id: str, op: str, barrier_id: str) -> str:
    """DTM's Redis key for one barrier record."""
    return f"{gid}-{branch_id}-{op}-{barrier_id}"


def _text(value: Any) -> str:
    # The client may or may not decode responses.
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_expire(barrier_expire: int) -> None:
    if barrier_expire <= 0:
        raise ValueError("barrier_expire must be a positive number of seconds")


async def check_adjust_amount(
    redis: Any,
    *,
    gid: str,
    branch_id: str,
    op: str,
    barrier_id: str,
    key: str,
    amount: int,
    barrier_expire: int,
) -> RedisOutcome:
    """Run the amount script for one barrier call on a redis.asyncio client."""
    _check_expire(barrier_expire)
    origin_op = ORIGIN_OP.get(op, "")
    keys = [
        key,
        barrier_key(gid, branch_id, op, barrier_id),
        barrier_key(gid, branch_id, origin_op, barrier_id),
    ]
    script = redis.register_script(CHECK_ADJUST_AMOUNT_LUA)
    result = await script(keys=keys, args=[int(amount), origin_op, int(barrier_expire)])
    return RedisOutcome(_text(result))


async def query_prepared(
    redis: Any, *, gid: str, branch_id: str, op: str, barrier_id: str, barrier_expire: int
) -> str:
    """Mark the msg's local transaction rolled back unless it ran; return the stored value."""
    _check_expire(barrier_expire)
    script = redis.register_script(QUERY_PREPARED_LUA)
    key = barrier_key(gid, branch_id, op, barrier_id)
    return _text(await script(keys=[key], args=[int(barrier_expire)]))
