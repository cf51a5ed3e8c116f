"""Tokens, roles and the Auth settings block, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtmx.errors import ConfigError, Forbidden, Unauthorized
from dtmx.security.audit import safe_url
from dtmx.security.auth import ANONYMOUS, Authenticator, Principal, bearer
from dtmx.security.config import AuthSettings, TokenSettings
from dtmx.security.roles import Role, grpc_role, http_role, http_route_name
from dtmx.settings import load

T1 = "t1-0123456789abcdef"
T2 = "t2-0123456789abcdef"


def _auth(*tokens: TokenSettings) -> AuthSettings:
    return AuthSettings(Tokens=tokens)


def test_roles_by_route() -> None:
    assert http_route_name("/api/dtmsvr/topic/x") == "topic"
    assert http_role("/api/dtmsvr/submit") is Role.CLIENT
    assert http_role("/api/dtmsvr/forceStop") is Role.OPERATOR
    assert http_role("/api/metrics") is Role.OPERATOR
    assert http_role("/api/ping") is None and http_role("/api/health") is None
    assert http_role("/somewhere/else") is Role.ADMIN  # unknown: fail closed
    assert grpc_role("/dtmgimp.Dtm/Submit") is Role.CLIENT
    assert grpc_role("/dtmgimp.Dtm/DeleteTopic") is Role.OPERATOR
    assert grpc_role("/dtmgimp.Dtm/Unknown") is Role.ADMIN
    assert grpc_role("/grpc.health.v1.Health/Check") is None
    assert Role.parse(" Operator ") is Role.OPERATOR
    with pytest.raises(ValueError, match="client, operator, admin"):
        Role.parse("root")


def test_bearer_parsing() -> None:
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") == "" and bearer(None) == "" and bearer("Bearer") == ""


def test_authenticate_and_authorize(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text(f"# two valid at once\n{T1}\n{T2}\n")
    a = Authenticator(_auth(
        TokenSettings(Name="svc", Role="client", TokenEnv="TOK"),
        TokenSettings(Name="ops", Role="operator", TokenFile=str(f)),
    ), env={"TOK": "svc-0123456789abcdef"})
    assert a.authenticate("Bearer svc-0123456789abcdef") == Principal("svc", Role.CLIENT)
    assert a.authenticate(f"Bearer {T2}") == Principal("ops", Role.OPERATOR)
    with pytest.raises(Unauthorized):
        a.authenticate(None)
    with pytest.raises(Unauthorized):
        a.authenticate("Bearer nope-0123456789abcdef")
    with pytest.raises(Forbidden, match="needs operator"):
        a.authorize("Bearer svc-0123456789abcdef", Role.OPERATOR)
    assert a.authorize(None, None).role is Role.CLIENT  # open routes need no token
    f.write_text(T2)
    assert a.reload()
    with pytest.raises(Unauthorized):
        a.authenticate(f"Bearer {T1}")
    f.unlink()
    assert not a.reload()  # keeps what is in force
    assert a.authenticate(f"Bearer {T2}").name == "ops"


def test_open_without_auth() -> None:
    a = Authenticator(None, env={})
    assert not a.enabled and a.authorize(None, Role.ADMIN) is ANONYMOUS


@pytest.mark.parametrize("token,env,msg", [
    (TokenSettings(Name="a", Token="short"), {}, "at least 16"),
    (TokenSettings(Name="a", TokenEnv="NOPE"), {}, "NOPE is not set"),
    (TokenSettings(Name="a", TokenFile="/nonexistent/x"), {}, "cannot read TokenFile"),
    (TokenSettings(Name="a", TokenEnv="E"), {"E": "  "}, "no token"),
])
def test_bad_token_sources(token: TokenSettings, env: dict[str, str], msg: str) -> None:
    with pytest.raises(ConfigError, match=msg) as e:
        Authenticator(_auth(token), env=env)
    assert "short" not in str(e.value) or msg == "at least 16"


def test_auth_settings_from_yaml_and_env(tmp_path: Path) -> None:
    p = tmp_path / "c.yml"
    p.write_text(f"Auth:\n  Tokens:\n    - {{Name: ops, Token: {T1}, Role: operator}}\n")
    s = load(str(p), env={})
    assert s.Auth is not None and s.Auth.Tokens[0].Role == "operator"
    assert T1 not in repr(s)  # secrets stay out of reprs (and so out of logs)
    s = load(None, env={"AUTH_TOKENS": "[{Name: svc, TokenEnv: X}]",
                        "AUTH_RELOAD_INTERVAL": "2"})
    assert s.Auth is not None and s.Auth.Tokens[0].TokenEnv == "X" and s.Auth.ReloadInterval == 2
    assert load(None, env={}).Auth is None
    for bad, msg in [
        ("Auth: {Tokens: []}", "non-empty"),
        ("Auth: {Tokens: [{Token: x}]}", "Name is required"),
        ("Auth: {Tokens: [{Name: a, Token: x, Role: god}]}", "Role"),
        ("Auth: {Tokens: [{Name: a, Token: x, TokenEnv: Y}]}", "exactly one"),
        ("Auth: {Tokens: [{Name: a, Token: x}, {Name: a, Token: y}]}", "twice"),
    ]:
        p.write_text(bad)
        with pytest.raises(ConfigError, match=msg):
            load(str(p), env={})


def test_safe_url_drops_credentials_and_query() -> None:
    assert safe_url("http://u:p@h:81/a?token=x") == "http://h:81/a"
    assert safe_url("http://[::1]:8/x") == "http://[::1]:8/x"
