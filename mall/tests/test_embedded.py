"""Embedded mode (what `python -m mall run` starts): SQLite, no Redis, fixed addresses,
against a dtmx server with an SQLite store. Registration, refusal and the configs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mall.common.config import (
    AuthConf,
    PrometheusConf,
    RpcClientConf,
    SQLiteConf,
    UserApiConf,
    UserConf,
    UserScoreConf,
    load,
)
from mall.user import service as user_service
from mall.userapi.app import build as build_api
from mall.userscore import service as score_service
from tests.support.server import ServerProcess
from tests.support.util import free_port

ETC = Path(__file__).resolve().parents[1] / "etc"


def test_shipped_configs_load() -> None:
    for mode in (ETC, ETC / "embedded"):
        user = load(UserConf, mode / "user.yaml")
        score = load(UserScoreConf, mode / "userscore.yaml")
        api = load(UserApiConf, mode / "userapi-api.yaml")
        assert user.Name == "user.rpc" and score.Name == "score.rpc"
        assert score.ListenOn.endswith(":8096") and api.Port == 8888
        assert api.Prometheus.Port == 9081 and api.Prometheus.Path == "/metrics"
    full = load(UserScoreConf, ETC / "userscore.yaml")
    assert full.Etcd is not None and full.Etcd.Key == "score.rpc"
    assert full.MySQL is not None and "/dtm_barrier?" in full.MySQL.DataSource
    assert load(UserConf, ETC / "user.yaml").Etcd.Key == "user.rpc"  # type: ignore[union-attr]
    assert load(UserApiConf, ETC / "userapi-api.yaml").DtmServer.endswith("/dtmservice")


@pytest.fixture(scope="module")
def sqlite_dtmx() -> Any:
    with ServerProcess() as server:  # SQLite store, no etcd
        yield server


@pytest.fixture
async def embedded(tmp_path: Path, sqlite_dtmx: ServerProcess) -> AsyncIterator[str]:
    user_conf = UserConf(Name="user.rpc", ListenOn=f"127.0.0.1:{free_port()}",
                         SQLite=SQLiteConf(Path=str(tmp_path / "user.db")),
                         BarrierTable="barrier")
    score_conf = UserScoreConf(Name="score.rpc", ListenOn=f"127.0.0.1:{free_port()}",
                               SQLite=SQLiteConf(Path=str(tmp_path / "score.db")),
                               BarrierTable="barrier", ScoreBudget=20)
    user = await (await user_service.build(user_conf)).start()
    score = await (await score_service.build(score_conf)).start()
    api_conf = UserApiConf(
        Host="127.0.0.1", Port=free_port(),
        UserRpc=RpcClientConf(Endpoints=[user.address]),
        UserScoreRpc=RpcClientConf(Endpoints=[score.address]),
        DtmServer=sqlite_dtmx.grpc_target, RegisterTimeout=3,
        Prometheus=PrometheusConf(Port=0), Auth=AuthConf(Secret="s" * 32),
    )  # fmt: skip
    api = await build_api(api_conf).start()
    try:
        yield f"http://127.0.0.1:{api_conf.Port}"
    finally:
        await api.stop()
        await score.stop(0)
        await user.stop(0)


async def test_embedded_register_and_refusal(embedded: str) -> None:
    async with httpx.AsyncClient(timeout=15, trust_env=False) as http:
        for name in ("ann", "ben"):
            r = await http.post(f"{embedded}/user/register", json={"name": name, "gender": "male"})
            assert r.status_code == 200, r.text
        r = await http.post(f"{embedded}/user/register", json={"name": "cid", "gender": "male"})
        assert r.status_code == 422 and "budget" in r.json()["message"]
        assert (await http.post(f"{embedded}/user/login", json={"name": "cid"})).status_code == 401
        token = (await http.post(f"{embedded}/user/login", json={"name": "ben"})).json()
        info = await http.get(f"{embedded}/user/info",
                              headers={"Authorization": f"Bearer {token['data']['token']}"})
        assert info.json()["data"]["score"] == 10
        # a miss, then the placeholder in the process-memory cache, still a 404
        r = await http.post(f"{embedded}/user/register", json={"name": "ann", "gender": "male"})
        assert r.status_code == 409
