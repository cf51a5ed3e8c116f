"""The BranchPolicy rules, pure: parsing, matching, the defaults, entry and address checks."""

from __future__ import annotations

import pytest

from dtmx.core.branch_policy import BranchPolicy, Rule, RuleKind, endpoint_of, refuse_denied
from dtmx.errors import BadRequest

DEFAULT = BranchPolicy()


@pytest.mark.parametrize("text,kind", [
    ("169.254.0.0/16", RuleKind.NETWORK), ("127.0.0.1", RuleKind.NETWORK),
    ("fe80::/10", RuleKind.NETWORK), ("metadata.google.internal", RuleKind.HOST),
    ("*.internal", RuleKind.HOST), ("*:6379", RuleKind.HOST_PORT),
    ("redis.local:*", RuleKind.HOST_PORT), ("[::1]:80", RuleKind.HOST_PORT),
])
def test_rule_forms(text: str, kind: RuleKind) -> None:
    assert Rule.parse(text).kind is kind


@pytest.mark.parametrize("bad", ["", "a b", "h:99999", "h:x", "[::1]", "a/b/c"])
def test_bad_rules(bad: str) -> None:
    with pytest.raises(ValueError):
        Rule.parse(bad)


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x",
    "http://[::ffff:169.254.169.254]/x", "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./x", "169.254.169.254:80/busi.Busi/TransOut",
    "http://100.100.100.200/latest",
])
def test_default_denies_link_local_and_metadata(url: str) -> None:
    v = DEFAULT.check_url(url)
    assert v is not None and "Deny:" in v.rule and url in v.message()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/api", "https://svc.example/x", "localhost:50051/busi.Busi/TransIn",
    "etcd://127.0.0.1:2379/dtmservice/busi.Busi/TransIn", "http://10.1.2.3/x",
])
def test_default_allows_the_rest(url: str) -> None:
    assert DEFAULT.check_url(url) is None


def test_schemes_allow_and_deny() -> None:
    p = BranchPolicy.build(schemes=("https",), allow=("*.svc.local", "10.0.0.0/8"),
                           deny=("*:6379", "bad.svc.local"))
    assert p.check_url("http://a.svc.local/x") is not None  # scheme
    assert p.check_url("https://a.svc.local/x") is None
    v = p.check_url("https://bad.svc.local/x")
    assert v is not None and v.rule == "Deny: bad.svc.local"
    v = p.check_url("https://a.svc.local:6379/x")
    assert v is not None and v.rule == "Deny: *:6379"
    assert p.check_url("https://10.2.3.4/x") is None
    v = p.check_url("https://192.168.1.1/x")
    assert v is not None and v.rule == "Allow"
    # a name is judged at connect time when an allowed network could hold it
    assert p.check_url("https://other.example/x") is None
    assert p.check_address("u", "other.example", 443, "10.9.9.9") is None
    v = p.check_address("u", "other.example", 443, "192.168.1.1")
    assert v is not None and v.rule == "Allow"


def test_address_check_catches_rebinding_and_odd_forms() -> None:
    p = BranchPolicy.build(deny=("127.0.0.0/8",))
    assert p.check_url("http://localhost:80/x") is None  # a name: judged on its addresses
    assert p.check_address("u", "localhost", 80, "127.0.0.1") is not None
    assert p.check_address("u", "localhost", 80, "::ffff:127.0.0.1") is not None
    assert p.check_address("u", "2130706433", 80, "127.0.0.1") is not None
    assert DEFAULT.check_address("u", "evil.example", 80, "169.254.169.254") is not None
    assert DEFAULT.check_address("u", "evil.example", 80, "93.184.216.34") is None


def test_endpoints() -> None:
    assert endpoint_of("http://h/x").port == 80 and endpoint_of("https://h/x").port == 443
    ep = endpoint_of("[::1]:5000/p.S/M")
    assert (ep.scheme, ep.host, ep.port) == ("grpc", "::1", 5000)
    with pytest.raises(ValueError):
        endpoint_of("no-port/p.S/M")


def test_refuse_denied_names_url_and_rule() -> None:
    p = BranchPolicy.build(deny=("127.0.0.2",))
    refuse_denied(p, ["", "http://127.0.0.1/x"])
    with pytest.raises(BadRequest, match=r"http://127.0.0.2/x.*Deny: 127.0.0.2"):
        refuse_denied(p, ["http://127.0.0.1/x", "http://127.0.0.2/x"])
    with pytest.raises(BadRequest, match="scheme 'ftp'"):
        refuse_denied(p, ["ftp://127.0.0.1/x"])


def test_branch_policy_settings(tmp_path: object) -> None:
    from pathlib import Path

    from dtmx.errors import ConfigError
    from dtmx.settings import load

    p = Path(str(tmp_path)) / "c.yml"
    p.write_text("BranchPolicy: {Deny: ['127.0.0.2/32', '*:6379'], Schemes: [http]}\n")
    s = load(str(p), env={})
    assert s.BranchPolicy.Deny == ("127.0.0.2/32", "*:6379") and s.BranchPolicy.DenyDefaults
    s = load(None, env={"BRANCH_POLICY_ALLOW": "10.0.0.0/8, *.svc",
                        "BRANCH_POLICY_DENY_DEFAULTS": "false"})
    assert s.BranchPolicy.Allow == ("10.0.0.0/8", "*.svc") and not s.BranchPolicy.DenyDefaults
    p.write_text("BranchPolicy: {Deny: ['h:99999']}\n")
    with pytest.raises(ConfigError, match="h:99999"):
        load(str(p), env={})
