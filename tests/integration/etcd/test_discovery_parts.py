"""The pure parts of dtmx.discovery: URL parsing, go-zero key layout, the endpoint table."""

from __future__ import annotations

import pytest

from dtmx.discovery import (
    DiscoveryError,
    EndpointTable,
    EtcdTarget,
    is_etcd_url,
    parse_etcd_url,
    registration_key,
)
from dtmx.invoke.grpc import parse_grpc_url


def test_parse_etcd_url() -> None:
    assert parse_etcd_url("etcd://127.0.0.1:2379/dtmservice") == EtcdTarget(
        hosts=("127.0.0.1:2379",), key="dtmservice")
    t = parse_etcd_url("etcd://a,b:2380/user.rpc/")
    assert t.hosts == ("a:2379", "b:2380") and t.address == "a:2379" and t.key == "user.rpc"
    assert t.prefix == "user.rpc/" and t.url() == "etcd://a:2379,b:2380/user.rpc"
    for bad in ("etcd://host:2379", "etcd:///key", "http://h:1/k", "h:1/k"):
        with pytest.raises(DiscoveryError):
            parse_etcd_url(bad)
    assert is_etcd_url("ETCD://h/k") and not is_etcd_url("h:1")


def test_branch_url_target_is_what_the_resolver_gets() -> None:
    u = parse_grpc_url("etcd://127.0.0.1:2379/busi.svc/dtmxbusi.Busi/TransIn")
    assert u.target == "etcd://127.0.0.1:2379/busi.svc" and u.method == "/dtmxbusi.Busi/TransIn"
    assert parse_etcd_url(u.target).key == "busi.svc"


def test_registration_key_is_go_zero_layout() -> None:
    assert registration_key("dtmservice", 7587869497362446865) == "dtmservice/7587869497362446865"


def test_endpoint_table_round_robin_and_duplicates() -> None:
    t = EndpointTable()
    assert t.pick() is None
    t.replace({"s/1": "a:1", "s/2": "b:2", "s/3": "a:1", "s/4": ""})
    assert t.endpoints == ["a:1", "b:2"]  # a re-registered instance counts once
    assert sorted(t.pick() or "" for _ in range(4)) == ["a:1", "a:1", "b:2", "b:2"]
    t.delete("s/1")
    assert t.endpoints == ["a:1", "b:2"]  # s/3 still names a:1
    t.delete("s/3")
    t.put("s/5", "c:3")
    assert t.endpoints == ["b:2", "c:3"]
    t.delete("nope")
    assert {t.pick(), t.pick()} == {"b:2", "c:3"}
