"""The rpc branches called directly, as dtmx would: duplicate deliveries, null
compensation, hanging actions, refusals, and the cache-aside of getUser."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import grpc.aio
import pytest

from mall.proto import user_pb2, user_pb2_grpc, user_score_pb2, user_score_pb2_grpc
from mall.tests.conftest import Mall, unique_name
from mall.user.service import cache_key
from mall.userapi.ids import Snowflake

IDS = Snowflake(node=1)


def branch_md(gid: str, branch_id: str, op: str) -> tuple[tuple[str, str], ...]:
    return (("dtm-gid", gid), ("dtm-trans_type", "saga"), ("dtm-branch_id", branch_id),
            ("dtm-op", op), ("dtm-dtm", "127.0.0.1:1"))


@pytest.fixture
async def stubs(mall: Mall) -> Any:
    assert mall.user is not None and mall.score is not None
    uch = grpc.aio.insecure_channel(mall.user.address)
    sch = grpc.aio.insecure_channel(mall.score.address)
    yield user_pb2_grpc.UserStub(uch), user_score_pb2_grpc.UserScoreStub(sch)  # type: ignore[no-untyped-call]
    await uch.close()
    await sch.close()


async def test_duplicate_delivery_does_not_double_points(mall: Mall, stubs: Any) -> None:
    _, score = stubs
    user_id, gid = IDS.next_id(), uuid.uuid4().hex
    req = user_score_pb2.UserScoreRequest(userId=user_id, score=10)
    for _ in range(3):
        reply = await score.saveUserScore(req, metadata=branch_md(gid, "02", "action"))
        assert reply.score == 10
    assert await mall.points(user_id) == [(user_id, 10)]
    got = await score.getUserScore(user_score_pb2.UserScoreRequest(userId=user_id))
    assert got.score == 10
    # the compensation, delivered twice, gives the points back once
    for _ in range(2):
        await score.saveUserScoreCallback(req, metadata=branch_md(gid, "02", "compensate"))
    assert await mall.points(user_id) == []
    assert await mall.sql(mall.score_db, "SELECT granted FROM score_budget") == [(0,)]


async def test_duplicate_save_user_inserts_once(mall: Mall, stubs: Any) -> None:
    user, _ = stubs
    name, user_id, gid = unique_name(), IDS.next_id(), uuid.uuid4().hex
    req = user_pb2.UserRequest(id=user_id, name=name, gender="male")
    for _ in range(2):
        await user.saveUser(req, metadata=branch_md(gid, "01", "action"))
    assert await mall.users_named(name) == [(user_id, name)]


async def test_null_compensation_then_hanging_action(mall: Mall, stubs: Any) -> None:
    user, score = stubs
    user_id, gid, name = IDS.next_id(), uuid.uuid4().hex, unique_name()
    sreq = user_score_pb2.UserScoreRequest(userId=user_id, score=10)
    ureq = user_pb2.UserRequest(id=user_id, name=name, gender="female")
    # the compensation arrives first (the action timed out on its way) ...
    await score.saveUserScoreCallback(sreq, metadata=branch_md(gid, "02", "compensate"))
    await user.saveUserRevert(ureq, metadata=branch_md(gid, "01", "compensate"))
    # ... then the late actions must do nothing
    await score.saveUserScore(sreq, metadata=branch_md(gid, "02", "action"))
    await user.saveUser(ureq, metadata=branch_md(gid, "01", "action"))
    assert await mall.points(user_id) == []
    assert await mall.users_named(name) == []


async def test_refusals_are_aborted(mall_factory: Any) -> None:
    mall: Mall = mall_factory(budget=5)
    await mall.start_user()
    await mall.start_score()
    assert mall.user is not None and mall.score is not None
    async with grpc.aio.insecure_channel(mall.score.address) as ch:
        score = user_score_pb2_grpc.UserScoreStub(ch)  # type: ignore[no-untyped-call]
        req = user_score_pb2.UserScoreRequest(userId=IDS.next_id(), score=10)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await score.saveUserScore(req, metadata=branch_md(uuid.uuid4().hex, "02", "action"))
        assert e.value.code() == grpc.StatusCode.ABORTED
        assert "budget" in (e.value.details() or "")
        # not a branch call: refused as such
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await score.saveUserScore(req)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    async with grpc.aio.insecure_channel(mall.user.address) as ch:
        user = user_pb2_grpc.UserStub(ch)  # type: ignore[no-untyped-call]
        name = unique_name()
        await user.saveUser(user_pb2.UserRequest(id=IDS.next_id(), name=name, gender="male"),
                            metadata=branch_md(uuid.uuid4().hex, "01", "action"))
        # the same name in another transaction (a race the API's pre-check missed)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await user.saveUser(
                user_pb2.UserRequest(id=IDS.next_id(), name=name, gender="male"),
                metadata=branch_md(uuid.uuid4().hex, "01", "action"),
            )
        assert e.value.code() == grpc.StatusCode.ABORTED
        assert "already taken" in (e.value.details() or "")


async def test_get_user_cache_aside(mall: Mall, stubs: Any, redis: Any) -> None:
    user, _ = stubs
    user_id, gid, name = IDS.next_id(), uuid.uuid4().hex, unique_name()
    key = cache_key(user_id)
    assert key == f"cache:user:id:{user_id}"
    # a miss caches a short placeholder, so repeated misses stay off MySQL
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await user.getUser(user_pb2.IdRequest(id=str(user_id)))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert await redis.get(key) == "*"
    assert 0 < await redis.ttl(key) <= mall.user_conf.CacheNotFoundExpire
    # saveUser invalidates it ...
    ureq = user_pb2.UserRequest(id=user_id, name=name, gender="other")
    await user.saveUser(ureq, metadata=branch_md(gid, "01", "action"))
    assert await redis.get(key) is None
    # ... the next read fills it with the row ...
    got = await user.getUser(user_pb2.IdRequest(id=str(user_id)))
    assert got.name == name and got.gender == "other"
    assert name in (await redis.get(key) or "")
    # ... and is served from it (the row is gone from MySQL behind the cache's back)
    await mall.sql(mall.user_db, "DELETE FROM `user` WHERE id = %s", user_id)
    assert (await user.getUser(user_pb2.IdRequest(id=str(user_id)))).name == name
    # the compensation invalidates it again
    await mall.sql(mall.user_db, "INSERT INTO `user` (id, name, gender, create_time) "
                   "VALUES (%s, %s, 'other', 0)", user_id, name)
    await user.saveUserRevert(ureq, metadata=branch_md(gid, "01", "compensate"))
    assert await redis.get(key) is None
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await user.getUser(user_pb2.IdRequest(id=str(user_id)))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    await redis.delete(key)

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await user.getUser(user_pb2.IdRequest(id="abc"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
