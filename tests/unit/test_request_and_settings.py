from __future__ import annotations

import pytest

from dtmx.core.models import Protocol, TransType
from dtmx.core.request import parse_trans_body
from dtmx.errors import BadRequest, ConfigError
from dtmx.settings import env_name, load
from dtmx.store_settings import store_target


def test_parse_accepts_dtmcli_body_with_nulls() -> None:
    body = {"gid": "g1", "trans_type": "saga", "custom_data": None, "steps": [
        {"action": "http://a", "compensate": "http://c"}], "payloads": ['{"x":1}'],
        "query_prepared": None, "protocol": None, "wait_result": False, "timeout_to_fail": 0,
        "request_timeout": 8, "retry_interval": 0, "passthrough_headers": [],
        "branch_headers": {}, "concurrent": False}
    r = parse_trans_body(body)
    assert r.trans_type is TransType.SAGA and r.protocol is Protocol.HTTP
    assert r.payloads == [b'{"x":1}'] and r.options.request_timeout == 8


def test_legacy_step_data_becomes_payload() -> None:
    r = parse_trans_body({"gid": "g", "trans_type": "msg", "steps": [{"action": "u", "data": "d"}]})
    assert r.payloads == [b"d"] and r.steps == [{"action": "u"}]


@pytest.mark.parametrize("body,msg", [
    ([], "JSON object"), ({"trans_type": "saga"}, "gid"), ({"gid": "x" * 129, "trans_type": "saga"},
    "longer"), ({"gid": "g", "trans_type": "nope"}, "unknown trans_type"),
    ({"gid": "g", "trans_type": "saga", "steps": "x"}, "steps"),
    ({"gid": "g", "trans_type": "saga", "payloads": [1]}, "payloads"),
    ({"gid": "g", "trans_type": "saga", "timeout_to_fail": "10"}, "timeout_to_fail"),
    ({"gid": "g", "trans_type": "saga", "branch_headers": {"a": 1}}, "branch_headers"),
    ({"gid": 5, "trans_type": "saga"}, "gid"),
])
def test_bad_bodies(body: object, msg: str) -> None:
    with pytest.raises(BadRequest, match=msg):
        parse_trans_body(body)


def test_settings_yaml_env_and_errors(tmp_path: object) -> None:
    from pathlib import Path

    p = Path(str(tmp_path)) / "c.yml"
    p.write_text("Store:\n  Driver: mysql\n  Host: db\n  Port: 3307\nHttpPort: 1234\nBogus: 1\n")
    s = load(str(p), env={"HTTP_PORT": "4321", "STORE_REDIS_PREFIX": "{x}"})
    assert s.HttpPort == 4321 and s.Store.Driver == "mysql" and s.Store.RedisPrefix == "{x}"
    t = store_target(s.Store)
    assert (t.host, t.port, t.db) == ("db", 3307, "dtm")
    assert env_name("Store.RedisPrefix") == "STORE_REDIS_PREFIX"
    assert env_name("TransCronInterval") == "TRANS_CRON_INTERVAL"
    with pytest.raises(ConfigError):
        load(None, env={"STORE_DRIVER": "oracle"})
    with pytest.raises(ConfigError):
        load(None, env={"HTTP_PORT": "abc"})
    p.write_text("- a list\n")
    with pytest.raises(ConfigError):
        load(str(p), env={})


def test_store_url() -> None:
    s = load(None, env={"STORE_URL": "postgresql://u:p%40ss@h:5433/dtm"})
    t = store_target(s.Store)
    assert (t.driver, t.user, t.password, t.host, t.port, t.db) == (
        "postgres", "u", "p@ss", "h", 5433, "dtm")
    assert "p@ss" not in repr(s)


def test_write_batch_lanes() -> None:
    assert load(None, env={}).Store.WriteBatchLanes == 2
    assert load(None, env={"STORE_WRITE_BATCH_LANES": "0"}).Store.WriteBatchLanes == 0
    with pytest.raises(ConfigError, match=r"Store\.WriteBatchLanes must be in 0\.\.64"):
        load(None, env={"STORE_WRITE_BATCH_LANES": "65"})


def test_branch_owner_header_is_off_by_default_and_must_be_a_header_name() -> None:
    assert load(None, env={}).BranchOwnerHeader == ""
    assert load(None, env={"BRANCH_OWNER_HEADER": "Dtmx-Owner"}).BranchOwnerHeader == "Dtmx-Owner"
    with pytest.raises(ConfigError, match="BranchOwnerHeader must be a header name"):
        load(None, env={"BRANCH_OWNER_HEADER": "Dtmx Owner"})


def test_limits_block_from_yaml_and_env(tmp_path: object) -> None:
    from pathlib import Path

    p = Path(str(tmp_path)) / "c.yml"
    p.write_text("Limits:\n  MaxBranches: 50\n  MaxBodyBytes: 2048\n")
    s = load(str(p), env={"LIMITS_MAX_TOPIC_FANOUT": "7"})
    assert (s.Limits.MaxBranches, s.Limits.MaxBodyBytes, s.Limits.MaxTopicFanout) == (50, 2048, 7)
    assert load(None, env={}).Limits.MaxHeaderBytes == 64 * 1024
    assert env_name("Limits.MaxBranchResponseBytes") == "LIMITS_MAX_BRANCH_RESPONSE_BYTES"
    with pytest.raises(ConfigError, match=r"Limits\.MaxBranches must be in 1\.\.100000, not 0"):
        load(None, env={"LIMITS_MAX_BRANCHES": "0"})
    with pytest.raises(ConfigError, match=r"Limits\.MaxBodyBytes"):
        load(None, env={"LIMITS_MAX_BODY_BYTES": "abc"})


def test_store_url_with_a_non_numeric_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="port must be a number") as e:
        load(None, env={"STORE_URL": "mysql://u:secret@h:abc/dtm"})
    assert "secret" not in e.value.message


def test_serialising_a_row_never_raises_whatever_it_holds() -> None:
    import orjson

    from dtmx.api.serialize import branch_json, iso, query_json
    from dtmx.core.models import Branch, Op, Status, Transaction, TransOptions

    huge = TransOptions(timeout_to_fail=2**70, request_timeout=10**300, retry_interval=-5,
                        retry_limit=2**64, retry_count=2**80)
    t = Transaction(gid="g", trans_type=TransType.SAGA, status=Status.SUBMITTED, options=huge,
                    create_time=1e300, update_time=float("inf"), next_cron_time=float("nan"),
                    next_cron_interval=float("inf"), finish_time=-1e300)
    b = Branch(gid="g", branch_id="01", op=Op.ACTION, url="u", data=b"\xff", create_time=2e11)
    out = orjson.loads(orjson.dumps(query_json(t, [b])))
    tr = out["transaction"]
    assert tr["create_time"].startswith("9999-12-31") and "next_cron_time" not in tr
    assert tr["finish_time"].startswith("1970-01-01")
    assert tr["timeout_to_fail"] == 2**31 - 1 and "retry_interval" not in tr
    assert iso(None) is None and branch_json(b)["create_time"].startswith("8307-")
