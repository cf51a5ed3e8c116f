"""Pure pieces: config loading, DSN parsing, refusal mapping, ids, payloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from mall.common.config import ConfigError, UserScoreConf, build, host_port, load
from mall.common.db import parse_mysql_dsn
from mall.common.discovery import advertised
from mall.userapi.ids import Snowflake
from mall.userapi.logic import ApiError, refusal, validate_register


def test_dsn() -> None:
    p = parse_mysql_dsn("root:123456@tcp(127.0.0.1:3306)/dtm_barrier?charset=utf8&loc=Local")
    assert (p.user, p.password, p.host, p.port, p.db) == (
        "root", "123456", "127.0.0.1", 3306, "dtm_barrier")
    p = parse_mysql_dsn("u@tcp(db:3307)/mall")
    assert (p.user, p.password, p.host, p.port) == ("u", "", "db", 3307)
    with pytest.raises(ConfigError):
        parse_mysql_dsn("not a dsn")


def test_config_rejects_unknown_and_bad_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    with pytest.raises(ConfigError, match="ScoreBudgt"):
        build(UserScoreConf, {"ScoreBudgt": 5})
    with pytest.raises(ConfigError, match="ScoreBudget"):
        build(UserScoreConf, {"ScoreBudget": "lots"})
    with pytest.raises(ConfigError, match=r"Etcd\.Hots"):
        build(UserScoreConf, {"Etcd": {"Hots": []}})
    f = tmp_path / "c.yaml"
    f.write_text("ScoreBudget: ${BUDGET:-7}\nListenOn: ${LISTEN}\n")
    monkeypatch.setenv("LISTEN", "1.2.3.4:5")
    conf = load(UserScoreConf, f)
    assert conf.ScoreBudget == 7 and conf.ListenOn == "1.2.3.4:5"
    monkeypatch.delenv("LISTEN")
    with pytest.raises(ConfigError, match="LISTEN"):
        load(UserScoreConf, f)
    with pytest.raises(ConfigError):
        load(UserScoreConf, tmp_path / "missing.yaml")


def test_addresses() -> None:
    assert host_port("0.0.0.0:8096") == ("0.0.0.0", 8096)
    assert advertised("0.0.0.0:8096") == "127.0.0.1:8096"
    assert advertised("10.0.0.2:1") == "10.0.0.2:1"
    with pytest.raises(ConfigError):
        host_port("8096")


def test_refusal_mapping() -> None:
    dup = refusal("url:h:1/user.User/saveUser return failed: user name 'a' is already taken")
    assert dup.status == 409 and dup.message == "user name 'a' is already taken"
    budget = refusal("url:h:2/score.UserScore/saveUserScore return failed: points budget "
                     "exhausted: cannot grant 10 points, 0 left")
    assert budget.status == 422 and "budget exhausted" in budget.message


def test_validate_register() -> None:
    assert validate_register({"name": " bob ", "gender": "male"}) == ("bob", "male")
    for bad in (None, {}, {"name": 3, "gender": "male"}, {"name": "a", "gender": "x"}):
        with pytest.raises(ApiError) as e:
            validate_register(bad)
        assert e.value.status == 400


def test_snowflake_ids_unique_and_positive() -> None:
    gen = Snowflake(node=5)
    ids = [gen.next_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert all(0 < i < 2**63 for i in ids)
    assert (ids[0] >> 12) & 0x3FF == 5
    with pytest.raises(ValueError):
        Snowflake(node=1024)


def test_user_api_refuses_a_short_secret() -> None:
    from mall.common.config import AuthConf, RpcClientConf, UserApiConf
    from mall.userapi.logic import UserApiLogic

    conf = UserApiConf(UserRpc=RpcClientConf(Endpoints=["h:1"]),
                       UserScoreRpc=RpcClientConf(Endpoints=["h:2"]),
                       Auth=AuthConf(Secret="short"))
    with pytest.raises(ConfigError, match="Secret"):
        UserApiLogic(conf)
