"""Server settings: DTM's YAML keys, each also settable from an environment variable.

Built once at the entry point and passed down. The environment variable of a key is DTM's:
the key path in upper snake case (`Store.Driver` -> STORE_DRIVER, `HttpPort` -> HTTP_PORT);
it overrides the file. Unknown keys are warned about; invalid values raise ConfigError.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from dtmx.core.limits import Limits, out_of_range
from dtmx.core.request import valid_header_name
from dtmx.errors import ConfigError
from dtmx.security.config import AuthSettings as AuthSettings  # the security blocks
from dtmx.security.config import BranchAnswerSettings as BranchAnswerSettings
from dtmx.security.config import BranchPolicySettings as BranchPolicySettings
from dtmx.security.config import TlsSettings as TlsSettings
from dtmx.security.config import TokenSettings as TokenSettings
from dtmx.security.config import build_auth, build_policy, validate_auth
from dtmx.store_settings import StoreDriver, StoreSettings, store_target

log = logging.getLogger("dtmx.settings")


@dataclass(frozen=True, slots=True)
class MicroServiceSettings:
    """DTM's MicroService block: registration of this server (etcd) and its endpoint."""

    Driver: str = "default"
    Target: str = ""
    EndPoint: str = ""


@dataclass(frozen=True, slots=True)
class LogSettings:
    """DTM's `Log` block plus ours. Level empty: the top-level LogLevel decides."""

    Level: str = ""
    Format: str = "text"  # text | json
    Outputs: str = "stderr"  # DTM's: comma-separated, stderr, stdout or file paths
    AccessLog: bool = False  # one line per API request (method, path, status, duration)


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Tracing (OpenTelemetry, OTLP) and metric options; the OTEL_* variables also apply."""

    Tracing: bool = False  # on as well when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set
    Endpoint: str = ""  # OTLP endpoint; empty: OTEL_EXPORTER_OTLP_ENDPOINT or the SDK default
    Protocol: str = "grpc"  # grpc | http/protobuf (OTEL_EXPORTER_OTLP_PROTOCOL wins)
    ServiceName: str = "dtmx"  # OTEL_SERVICE_NAME wins
    # DTM's exact label set: branchid on dtm_branch_process_total (one series per branch id)
    DtmLabels: bool = False


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Which notifications AlertWebHook receives, beyond DTM's retry alert."""

    Notify: str = "retry"  # comma-separated: retry, failed, stuck
    StuckAfter: float = 3600.0  # seconds unfinished before a `stuck` notification
    Timeout: float = 3.0  # per webhook POST
    Attempts: int = 5  # POSTs per notification, with doubling backoff from Backoff
    Backoff: float = 1.0  # seconds before the second POST; doubles after each failure


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the server, with DTM's names and defaults (the YAML file and DTM_*
    variables).
    """
    Store: StoreSettings = field(default_factory=StoreSettings)
    MicroService: MicroServiceSettings = field(default_factory=MicroServiceSettings)
    Limits: Limits = field(default_factory=Limits)
    Auth: AuthSettings | None = None
    Log: LogSettings = field(default_factory=LogSettings)
    Telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    Alert: AlertSettings = field(default_factory=AlertSettings)
    BranchPolicy: BranchPolicySettings = field(default_factory=BranchPolicySettings)
    BranchAnswers: BranchAnswerSettings = field(default_factory=BranchAnswerSettings)
    Tls: TlsSettings = field(default_factory=TlsSettings)
    Host: str = "0.0.0.0"
    HttpPort: int = 36789
    GrpcPort: int = 36790
    #: a listener of its own for DTM's JSON-RPC API (`POST /api/json-rpc`), which the HTTP
    #: port serves too; 0 = none. DTM reads its JsonRpcPort (36791) but never listens on it.
    JsonRpcPort: int = 0
    TransCronInterval: float = 3.0
    TimeoutToFail: float = 35.0
    RetryInterval: float = 10.0
    MaxRetryInterval: float = 3600.0
    RequestTimeout: float = 3.0
    LeaseSeconds: float = 30.0
    LogLevel: str = "info"
    Workers: int = 1
    AlertRetryLimit: int = 3
    AlertWebHook: str = field(default="", repr=False)  # its URL may hold a token
    AdminBasePath: str = ""
    HeartbeatInterval: float = 5.0
    #: a header name: every branch call then carries the owner token of the claim that
    #: makes it (README, "Which server called"); empty (DTM's behaviour): no such header
    BranchOwnerHeader: str = ""


# DTM keys we accept without using them, so a DTM config file loads without noise.
IGNORED = {
    "HttpMicroService", "UpdateBranchSync", "UpdateBranchAsyncGoroutineNum",
    "Log.RotationEnable", "Log.RotationConfigJSON", "TimeZoneOffset", "ConfigUpdateInterval",
    "GrpcServiceConfig", "Store.MaxIdleConns", "Store.ConnMaxLifeTime",
}


# The nested blocks, by key (the annotations are strings under `from __future__`).
_BLOCKS: dict[str, type] = {
    "Store": StoreSettings, "MicroService": MicroServiceSettings, "Limits": Limits,
    "Log": LogSettings, "Telemetry": TelemetrySettings, "Alert": AlertSettings,
    "BranchAnswers": BranchAnswerSettings, "Tls": TlsSettings,
}


def env_name(path: str) -> str:
    """`Store.RedisPrefix` -> STORE_REDIS_PREFIX (DTM's naming)."""
    parts = [re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", p) for p in path.split(".")]
    return "_".join(parts).upper()


def _coerce(path: str, kind: Any, value: Any) -> Any:
    if kind in (StoreDriver, "StoreDriver"):
        try:
            return StoreDriver(str(value))
        except ValueError:
            raise ConfigError(
                f"{path} must be one of {', '.join(StoreDriver)}, not {value!r}"
            ) from None
    try:
        if kind is bool or kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if kind is int or kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind is float or kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if value is None:
            return ""
        if isinstance(value, dict | list):
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: invalid value {value!r}") from None


def _build(cls: Any, data: Mapping[str, Any], prefix: str, env: Mapping[str, str]) -> Any:
    kwargs: dict[str, Any] = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        path = f"{prefix}{key}"
        if key not in names and path not in IGNORED:
            log.warning("unknown config key %s (ignored)", path)
    for name, f in names.items():
        path = f"{prefix}{name}"
        if name == "Auth" and cls is Settings:
            kwargs[name] = build_auth(data.get(name), env)
            continue
        if name == "BranchPolicy" and cls is Settings:
            kwargs[name] = build_policy(data.get(name), env)
            continue
        sub_cls = _BLOCKS.get(name) if cls is Settings else None
        if sub_cls is not None:
            sub = data.get(name) or {}
            if not isinstance(sub, dict):
                raise ConfigError(f"{path} must be a mapping")
            kwargs[name] = _build(sub_cls, sub, f"{path}.", env)
            continue
        value: Any = data.get(name, dataclasses.MISSING)
        if env_name(path) in env:
            value = env[env_name(path)]
        if value is not dataclasses.MISSING:
            kwargs[name] = _coerce(path, f.type, value)
    return cls(**kwargs)


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read YAML (optional) and the environment into validated Settings."""
    env = os.environ if env is None else env
    data: Any = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must be a YAML mapping")
    s: Settings = _build(Settings, data, "", env)
    validate(s)
    return s


def validate(s: Settings) -> None:
    """Raise ConfigError naming the first setting out of its range."""
    if s.Store.Url:
        store_target(s.Store)  # an unknown scheme or a bad port is a ConfigError
    for name in ("HttpPort", "GrpcPort", "JsonRpcPort"):
        port = getattr(s, name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"{name} must be a port number, not {port}")
    for name in ("TransCronInterval", "RetryInterval", "RequestTimeout", "LeaseSeconds"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be > 0")
    if s.TimeoutToFail < 0:
        raise ConfigError("TimeoutToFail must be >= 0")
    if s.HeartbeatInterval <= 0:
        raise ConfigError("HeartbeatInterval must be > 0")
    if s.AdminBasePath and (not s.AdminBasePath.startswith("/") or "?" in s.AdminBasePath):
        raise ConfigError(f"AdminBasePath must be a path starting with /, not {s.AdminBasePath!r}")
    if not 0 <= s.Store.WriteBatchLanes <= 64:
        raise ConfigError("Store.WriteBatchLanes must be in 0..64")
    if s.BranchOwnerHeader and not valid_header_name(s.BranchOwnerHeader):
        raise ConfigError(f"BranchOwnerHeader must be a header name, not {s.BranchOwnerHeader!r}")
    if s.Workers < 1:
        raise ConfigError("Workers must be >= 1")
    if s.Auth is not None:
        validate_auth(s.Auth)
    if s.BranchAnswers.MaxBytes < 0:
        raise ConfigError("BranchAnswers.MaxBytes must be >= 0")
    for key, level in (("LogLevel", s.LogLevel), ("Log.Level", s.Log.Level or "info")):
        if level.lower() not in ("debug", "info", "warn", "warning", "error"):
            raise ConfigError(f"{key} must be debug|info|warn|error, not {level!r}")
    if s.Log.Format not in ("text", "json"):
        raise ConfigError(f"Log.Format must be text or json, not {s.Log.Format!r}")
    if s.Telemetry.Protocol not in ("grpc", "http/protobuf"):
        raise ConfigError(
            f"Telemetry.Protocol must be grpc or http/protobuf, not {s.Telemetry.Protocol!r}"
        )
    bad = out_of_range(s.Limits)
    if bad:
        raise ConfigError("; ".join(bad))
    if s.AlertRetryLimit < 0:
        raise ConfigError("AlertRetryLimit must be >= 0")
    if s.AlertWebHook and urlparse(s.AlertWebHook).scheme not in ("http", "https"):
        raise ConfigError("AlertWebHook must be an http:// or https:// URL")
    unknown = set(alert_kinds(s.Alert)) - {"retry", "failed", "stuck"}
    if unknown:
        raise ConfigError(f"Alert.Notify: unknown kinds {', '.join(sorted(unknown))}"
                          " (retry, failed, stuck)")
    if (s.Alert.StuckAfter <= 0 or s.Alert.Timeout <= 0 or s.Alert.Backoff <= 0
            or s.Alert.Attempts < 1):
        raise ConfigError("Alert.StuckAfter, Alert.Timeout and Alert.Backoff must be > 0, "
                          "Alert.Attempts >= 1")


def alert_kinds(a: AlertSettings) -> list[str]:
    """The notification kinds of Alert.Notify, in order."""
    return [k.strip().lower() for k in a.Notify.split(",") if k.strip()]


def log_level(s: Settings) -> str:
    """The effective level: Log.Level when set, else DTM's LogLevel."""
    return (s.Log.Level or s.LogLevel).lower()


def describe_store(s: Settings) -> str:
    """Where the store is, for log lines: driver, host:port and database, never a password."""
    t = store_target(s.Store)
    if t.driver is StoreDriver.SQLITE:
        return f"sqlite {t.db}"
    return f"{t.driver} {t.host}:{t.port}/{t.db}"
