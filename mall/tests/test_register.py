"""POST /user/register end to end: a gRPC saga through a real dtmx, on MariaDB and Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from mall.tests.conftest import Mall, unique_name
from mall.user.service import cache_key
from tests.support.server import ServerProcess


async def register(http: httpx.AsyncClient, mall: Mall, name: str, gender: str = "female"
                   ) -> httpx.Response:
    return await http.post(f"{mall.base}/user/register", json={"name": name, "gender": gender})


async def test_register_creates_user_and_points_and_cache_follows(
    mall: Mall, http: httpx.AsyncClient, redis: Any, dtmx: ServerProcess
) -> None:
    name = unique_name("alice")
    r = await register(http, mall, name)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    user_id = int(data["id"])
    assert data["name"] == name and data["score"] == 10
    assert dtmx.status(data["gid"]) == "succeed"
    assert await mall.users_named(name) == [(user_id, name)]
    assert await mall.points(user_id) == [(user_id, 10)]

    # Reading the user fills the cache (cache-aside) ...
    assert await redis.get(cache_key(user_id)) is None
    token = (await http.post(f"{mall.base}/user/login", json={"name": name})).json()["data"]
    info = await http.get(f"{mall.base}/user/info",
                          headers={"Authorization": f"Bearer {token['token']}"})
    assert info.status_code == 200 and info.json()["data"]["score"] == 10
    cached = await redis.get(cache_key(user_id))
    assert cached is not None and name in cached
    await redis.delete(cache_key(user_id))


async def test_refusal_by_budget_leaves_nothing(
    mall_factory: Any, http: httpx.AsyncClient, dtmx: ServerProcess
) -> None:
    mall: Mall = mall_factory(budget=15)
    await mall.start_user()
    await mall.start_score()
    await mall.start_api()
    first, second = unique_name("first"), unique_name("second")
    assert (await register(http, mall, first)).status_code == 200

    r = await register(http, mall, second)
    assert r.status_code == 422, r.text
    assert "budget" in r.json()["message"]
    assert await mall.users_named(second) == []
    rows = await mall.sql(mall.score_db, "SELECT COUNT(*), SUM(score) FROM user_score")
    assert rows == [(1, 10)]  # only the first user's points
    assert await mall.sql(mall.score_db, "SELECT granted FROM score_budget") == [(10,)]


async def test_bad_input(mall: Mall, http: httpx.AsyncClient) -> None:
    url = f"{mall.base}/user/register"
    cases: list[tuple[Any, str]] = [
        ({"gender": "male"}, "name"),
        ({"name": "", "gender": "male"}, "name"),
        ({"name": "x" * 65, "gender": "male"}, "name"),
        ({"name": unique_name()}, "gender"),
        ({"name": unique_name(), "gender": "robot"}, "gender"),
        ([1, 2], "JSON object"),
    ]
    for body, word in cases:
        r = await http.post(url, json=body)
        assert r.status_code == 400, (body, r.text)
        assert word in r.json()["message"]
    r = await http.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    r = await http.post(url, content=b"")
    assert r.status_code == 400


async def test_duplicate_name_is_409_and_leaves_one_user(
    mall: Mall, http: httpx.AsyncClient
) -> None:
    name = unique_name("dup")
    first = await register(http, mall, name)
    assert first.status_code == 200
    again = await register(http, mall, name, "male")
    assert again.status_code == 409 and "already taken" in again.json()["message"]
    rows = await mall.users_named(name)
    assert len(rows) == 1
    assert await mall.points(rows[0][0]) == [(rows[0][0], 10)]


async def test_user_service_down_is_503_and_creates_nothing(
    mall: Mall, http: httpx.AsyncClient
) -> None:
    assert mall.user is not None
    await mall.user.stop(0)  # withdraws its etcd registration
    mall.user = None
    name = unique_name("down")
    r = await register(http, mall, name)
    assert r.status_code == 503 and "unavailable" in r.json()["message"]
    await mall.start_user()
    assert await mall.users_named(name) == []


async def test_concurrent_registrations_never_overspend_the_budget(
    mall_factory: Any, http: httpx.AsyncClient
) -> None:
    mall: Mall = mall_factory(budget=50)
    await mall.start_user()
    await mall.start_score()
    await mall.start_api()
    names = [unique_name(f"rush{i}") for i in range(10)]
    answers = await asyncio.gather(*(register(http, mall, n) for n in names))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 5 + [422] * 5, [r.text for r in answers]
    winners = {r.json()["data"]["name"] for r in answers if r.status_code == 200}
    rows = await mall.sql(mall.user_db, "SELECT name FROM `user`")
    assert {n for (n,) in rows} == winners
    assert await mall.sql(mall.score_db, "SELECT COUNT(*), SUM(score) FROM user_score") == [
        (5, 50)
    ]
    assert await mall.sql(mall.score_db, "SELECT granted FROM score_budget") == [(50,)]


async def test_register_with_etcd_branch_urls(
    mall_factory: Any, http: httpx.AsyncClient, dtmx: ServerProcess
) -> None:
    """BranchTarget etcd: branch URLs are etcd://.../user.rpc/...; dtmx resolves them."""
    import dataclasses

    mall: Mall = mall_factory()
    mall.api_conf = dataclasses.replace(mall.api_conf, BranchTarget="etcd")
    await mall.start_user()
    await mall.start_score()
    await mall.start_api()
    name = unique_name("etcd")
    r = await register(http, mall, name)
    assert r.status_code == 200, r.text
    branches = dtmx.query(r.json()["data"]["gid"])["branches"]
    assert all(b["url"].startswith("etcd://") for b in branches)
    user_id = int(r.json()["data"]["id"])
    assert await mall.points(user_id) == [(user_id, 10)]
