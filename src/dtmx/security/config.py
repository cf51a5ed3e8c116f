"""The security blocks of the settings: `Auth`, `BranchPolicy`, `BranchAnswers`, `Tls`.

Frozen dataclasses like the rest of `dtmx.settings` (which re-exports them and calls the
builders here while it loads a file); secrets are `repr=False`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from dtmx.errors import ConfigError

log = logging.getLogger("dtmx.settings")


def _settings() -> Any:
    # dtmx.settings imports this module; its generic builder is reached at call time
    from dtmx import settings

    return settings


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """One API token: the literal `Token`, or where to read it from (`TokenFile`, a file of
    one or more tokens, or `TokenEnv`, the name of an environment variable). Several tokens
    in one source are all valid under this Name and Role (rotation)."""

    Name: str = ""
    Role: str = "client"
    Token: str = field(default="", repr=False)
    TokenFile: str = ""
    TokenEnv: str = ""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """API tokens (`Auth:`); absent (None in Settings) means every route is open, as in DTM.
    Env: AUTH_TOKENS holds the Tokens list as YAML/JSON text."""

    Tokens: tuple[TokenSettings, ...] = ()
    #: seconds between checks of the token files for changes (SIGHUP reloads at once)
    ReloadInterval: float = 5.0



@dataclass(frozen=True, slots=True)
class BranchPolicySettings:
    """Where branch calls may go (`BranchPolicy:`; rules in dtmx.core.branch_policy).
    Env: BRANCH_POLICY_ALLOW / _DENY / _SCHEMES as comma-separated lists."""

    Schemes: tuple[str, ...] = ("http", "https", "grpc", "etcd")
    Allow: tuple[str, ...] = ()
    Deny: tuple[str, ...] = ()
    #: also deny link-local and cloud metadata addresses (branch_policy.DEFAULT_DENY)
    DenyDefaults: bool = True


@dataclass(frozen=True, slots=True)
class BranchAnswerSettings:
    """How much of a branch's answer the server keeps in rollback_reason and returns to
    clients (wait_result), and writes to its log."""

    MaxBytes: int = 256
    Withhold: bool = False  # keep none of it (HTTP errors keep their status code)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS for the APIs, branch calls and stores (see dtmx.security.tls); empty: plain, as
    DTM."""

    CertFile: str = ""
    KeyFile: str = ""
    ClientCaFile: str = ""  # set: API clients must show a certificate this CA signed
    BranchCaFile: str = ""  # CA bundle for https:// branch calls (default: the system's)
    StoreCaFile: str = ""
    #: TLS to a SQL store: "" (the driver's default), require (encrypted, not
    #: verified), verify-ca (signed by StoreCaFile), verify-full (and the host name matches)
    StoreSslMode: str = ""  # CA for rediss:// (and TLS to SQL stores)



def build_auth(raw: Any, env: Mapping[str, str]) -> AuthSettings | None:
    """The `Auth` block: None when neither the file nor AUTH_TOKENS gives one."""
    if raw is None and "AUTH_TOKENS" not in env:
        return None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("Auth must be a mapping")
    data = dict(raw)
    if "AUTH_TOKENS" in env:
        try:
            data["Tokens"] = yaml.safe_load(env["AUTH_TOKENS"])
        except yaml.YAMLError:
            raise ConfigError("AUTH_TOKENS is not valid YAML/JSON") from None
    tokens = data.pop("Tokens", None)
    if not isinstance(tokens, list) or not tokens:
        raise ConfigError("Auth.Tokens must be a non-empty list (remove Auth to run open)")
    settings = _settings()
    built = []
    for i, t in enumerate(tokens):
        if not isinstance(t, dict):
            raise ConfigError(f"Auth.Tokens[{i}] must be a mapping")
        built.append(settings._build(TokenSettings, t, f"Auth.Tokens[{i}].", {}))
    auth: AuthSettings = settings._build(AuthSettings, data, "Auth.", env)
    return dataclasses.replace(auth, Tokens=tuple(built))


def _str_list(path: str, raw: Any, env: Mapping[str, str]) -> tuple[str, ...] | None:
    """A list of strings from YAML, or from its env variable as comma-separated text."""
    settings = _settings()
    if settings.env_name(path) in env:
        return tuple(x.strip() for x in env[settings.env_name(path)].split(",") if x.strip())
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(x, str | int) for x in raw):
        raise ConfigError(f"{path} must be a list of strings")
    return tuple(str(x) for x in raw)


def build_policy(raw: Any, env: Mapping[str, str]) -> BranchPolicySettings:
    """The BranchPolicy block (with `env` for variables it names) as settings; ConfigError on a bad
    block.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("BranchPolicy must be a mapping")
    lists = {}
    for key in ("Schemes", "Allow", "Deny"):
        value = _str_list(f"BranchPolicy.{key}", raw.get(key), env)
        if value is not None:
            lists[key] = value
    rest = {k: v for k, v in raw.items() if k not in ("Schemes", "Allow", "Deny")}
    deny_defaults = rest.pop("DenyDefaults", True)
    if "BRANCH_POLICY_DENY_DEFAULTS" in env:
        deny_defaults = env["BRANCH_POLICY_DENY_DEFAULTS"].strip().lower() in ("1", "true", "yes")
    for key in rest:
        log.warning("unknown config key BranchPolicy.%s (ignored)", key)
    if not isinstance(deny_defaults, bool):
        raise ConfigError("BranchPolicy.DenyDefaults must be true or false")
    built = BranchPolicySettings(DenyDefaults=deny_defaults, **lists)
    from dtmx.core.branch_policy import BranchPolicy

    try:
        BranchPolicy.build(schemes=built.Schemes, allow=built.Allow, deny=built.Deny)
    except ValueError as e:
        raise ConfigError(f"BranchPolicy: {e}") from None
    return built



def validate_auth(auth: AuthSettings) -> None:
    """Raise ConfigError for a token without a name, digest or known role, or a repeated name."""
    from dtmx.security.roles import Role

    names = set()
    for i, t in enumerate(auth.Tokens):
        where = f"Auth.Tokens[{i}]"
        if not t.Name:
            raise ConfigError(f"{where}.Name is required (it names the caller in the audit log)")
        if t.Name in names:
            raise ConfigError(f"{where}.Name {t.Name!r} is used twice")
        names.add(t.Name)
        try:
            Role.parse(t.Role)
        except ValueError as e:
            raise ConfigError(f"{where}.Role: {e}") from None
        if sum(bool(x) for x in (t.Token, t.TokenFile, t.TokenEnv)) != 1:
            raise ConfigError(f"{where} ({t.Name}) needs exactly one of Token, TokenFile, TokenEnv")
    if auth.ReloadInterval <= 0:
        raise ConfigError("Auth.ReloadInterval must be > 0")
