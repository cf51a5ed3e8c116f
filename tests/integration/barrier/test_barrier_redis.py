"""The Redis barrier (checked amount adjustment, msg query_prepared) against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from dtmx.client.barrier import BranchBarrier, Duplicated, Failure
from tests.integration.barrier.barrier_backends import new_gid

EXPIRE = 60


@pytest.fixture(params=[True, False], ids=["decoded", "bytes"])
async def rd(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=6379, decode_responses=request.param)
    yield client
    await client.aclose()


async def account(rd: aioredis.Redis, balance: int = 100) -> str:
    key = f"dtmx-barrier-test:{new_gid()}"
    await rd.set(key, balance, ex=EXPIRE)
    return key


async def balance(rd: aioredis.Redis, key: str) -> int:
    return int(await rd.get(key))


async def adjust(
    rd: aioredis.Redis, gid: str, op: str, key: str, amount: int, trans_type: str = "saga"
) -> None:
    barrier = BranchBarrier(trans_type=trans_type, gid=gid, branch_id="01", op=op)
    await barrier.redis_check_adjust_amount(rd, key, amount, EXPIRE)


async def test_action_applies_once_with_dtm_keys(rd: aioredis.Redis) -> None:
    key, gid = await account(rd), new_gid()
    await adjust(rd, gid, "action", key, -30)
    assert await balance(rd, key) == 70
    # DTM's key layout, so DTM's clients and dtmx share barrier records.
    assert await rd.get(f"{gid}-01-action-01") in ("op", b"op")
    assert 0 < await rd.ttl(f"{gid}-01-action-01") <= EXPIRE


async def test_action_then_compensate(rd: aioredis.Redis) -> None:
    key, gid = await account(rd), new_gid()
    await adjust(rd, gid, "action", key, -30)
    await adjust(rd, gid, "compensate", key, 30)
    assert await balance(rd, key) == 100


@pytest.mark.parametrize(
    ("trans_type", "cancel", "try_"),
    [
        ("tcc", "cancel", "try"),
        ("saga", "compensate", "action"),
        ("workflow", "rollback", "action"),
    ],
)
async def test_null_compensation_then_hanging(
    rd: aioredis.Redis, trans_type: str, cancel: str, try_: str
) -> None:
    key, gid = await account(rd), new_gid()
    await adjust(rd, gid, cancel, key, 30, trans_type)
    assert await balance(rd, key) == 100  # null compensation: nothing to undo
    assert await rd.get(f"{gid}-01-{try_}-01") in ("rollback", b"rollback")
    await adjust(rd, gid, try_, key, -30, trans_type)
    assert await balance(rd, key) == 100  # hanging: arrived after its cancel


async def test_duplicate_request_skipped(rd: aioredis.Redis) -> None:
    key, gid = await account(rd), new_gid()
    await adjust(rd, gid, "action", key, -30)
    await adjust(rd, gid, "action", key, -30)
    assert await balance(rd, key) == 70


async def test_concurrent_duplicates_apply_once(rd: aioredis.Redis) -> None:
    key, gid = await account(rd), new_gid()
    await asyncio.gather(*(adjust(rd, gid, "action", key, -30) for _ in range(5)))
    assert await balance(rd, key) == 70


async def test_insufficient_or_missing_amount_fails_without_barrier(rd: aioredis.Redis) -> None:
    key, gid = await account(rd, 20), new_gid()
    with pytest.raises(Failure):
        await adjust(rd, gid, "action", key, -30)
    assert await balance(rd, key) == 20
    # No barrier record was kept, so a retry once the amount suffices goes through.
    await rd.set(key, 50, ex=EXPIRE)
    await adjust(rd, gid, "action", key, -30)
    assert await balance(rd, key) == 20
    with pytest.raises(Failure):
        await adjust(rd, new_gid(), "action", f"dtmx-barrier-test:{new_gid()}", 10)


def msg_barrier(gid: str) -> BranchBarrier:
    return BranchBarrier(trans_type="msg", gid=gid, branch_id="00", op="msg")


async def test_query_prepared_before_local_op(rd: aioredis.Redis) -> None:
    key, gid = await account(rd), new_gid()
    with pytest.raises(Failure):
        await msg_barrier(gid).redis_query_prepared(rd, EXPIRE)
    with pytest.raises(Duplicated):
        await msg_barrier(gid).redis_check_adjust_amount(rd, key, -30, EXPIRE)
    assert await balance(rd, key) == 100


async def test_query_prepared_after_local_op(rd: aioredis.Redis) -> None:
    key, gid = await account(rd), new_gid()
    await msg_barrier(gid).redis_check_adjust_amount(rd, key, -30, EXPIRE)
    await msg_barrier(gid).redis_query_prepared(rd, EXPIRE)
    with pytest.raises(Duplicated):
        await msg_barrier(gid).redis_check_adjust_amount(rd, key, -30, EXPIRE)
    assert await balance(rd, key) == 70


async def test_expiry_must_be_positive(rd: aioredis.Redis) -> None:
    with pytest.raises(ValueError):
        await msg_barrier(new_gid()).redis_query_prepared(rd, 0)
