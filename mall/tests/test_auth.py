"""POST /user/login and GET /user/info: good, missing, malformed, forged and expired JWTs."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt

from mall.tests.conftest import SECRET, Mall, unique_name
from mall.user.service import cache_key


async def registered(http: httpx.AsyncClient, mall: Mall) -> tuple[str, int]:
    name = unique_name("login")
    r = await http.post(f"{mall.base}/user/register", json={"name": name, "gender": "male"})
    assert r.status_code == 200, r.text
    return name, int(r.json()["data"]["id"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_login_and_info(mall: Mall, http: httpx.AsyncClient) -> None:
    name, user_id = await registered(http, mall)
    r = await http.post(f"{mall.base}/user/login", json={"name": name})
    assert r.status_code == 200
    token = r.json()["data"]["token"]
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["userId"] == user_id
    assert claims["exp"] - claims["iat"] == mall.api_conf.Auth.ExpireIn

    info = await http.get(f"{mall.base}/user/info", headers=bearer(token))
    assert info.status_code == 200
    assert info.json()["data"] == {
        "id": str(user_id), "name": name, "gender": "male",
        "createTime": info.json()["data"]["createTime"], "score": 10,
    }  # fmt: skip


async def test_login_refusals(mall: Mall, http: httpx.AsyncClient) -> None:
    r = await http.post(f"{mall.base}/user/login", json={"name": unique_name("nobody")})
    assert r.status_code == 401
    r = await http.post(f"{mall.base}/user/login", json={})
    assert r.status_code == 400


async def test_info_rejects_bad_tokens(mall: Mall, http: httpx.AsyncClient, redis: Any) -> None:
    _, user_id = await registered(http, mall)
    now = int(time.time())
    forged = jwt.encode({"iat": now, "exp": now + 60, "userId": user_id},
                        "another-secret-of-sufficient-length-123", algorithm="HS256")
    expired = jwt.encode({"iat": now - 120, "exp": now - 60, "userId": user_id},
                         SECRET, algorithm="HS256")
    no_exp = jwt.encode({"iat": now, "userId": user_id}, SECRET, algorithm="HS256")
    no_user = jwt.encode({"iat": now, "exp": now + 60}, SECRET, algorithm="HS256")
    cases = {
        "missing": {},
        "not bearer": {"Authorization": "Basic abc"},
        "empty bearer": {"Authorization": "Bearer"},
        "garbage": bearer("not.a.jwt"),
        "forged": bearer(forged),
        "expired": bearer(expired),
        "no exp": bearer(no_exp),
        "no userId": bearer(no_user),
    }
    for what, headers in cases.items():
        r = await http.get(f"{mall.base}/user/info", headers=headers)
        assert r.status_code == 401, (what, r.text)
        assert r.json()["message"]
    assert "expired" in (await http.get(f"{mall.base}/user/info",
                                        headers=cases["expired"])).json()["message"]

    # a valid token for a user that does not exist (any more): 404
    ghost = jwt.encode({"iat": now, "exp": now + 60, "userId": user_id + 1},
                       SECRET, algorithm="HS256")
    r = await http.get(f"{mall.base}/user/info", headers=bearer(ghost))
    assert r.status_code == 404
    await redis.delete(cache_key(user_id + 1))  # the placeholder that miss left
