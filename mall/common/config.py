"""The services' YAML configs, with go-zero's field names (Name, ListenOn, Etcd, MySQL...).

Each service's config is a frozen dataclass; `load(cls, path)` reads the YAML into it,
checking every key, so a typo in a config file is an error rather than a silent default.
Environment variables `${NAME}` / `${NAME:-default}` inside values are expanded, which lets
tests and containers point a config at other hosts without copying the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file is missing, malformed or has an unknown or invalid key."""


@dataclass(frozen=True)
class EtcdConf:
    """go-zero's discov.EtcdConf: where etcd is and the key a service registers under."""

    Hosts: list[str] = field(default_factory=list)
    Key: str = ""


@dataclass(frozen=True)
class RpcClientConf:
    """go-zero's zrpc.RpcClientConf: etcd discovery, or fixed Endpoints (embedded mode)."""

    Etcd: EtcdConf | None = None
    Endpoints: list[str] = field(default_factory=list)
    Timeout: int = 5000  # milliseconds, as in go-zero


@dataclass(frozen=True)
class MySQLConf:
    """DataSource is a go-sql-driver DSN: user:pass@tcp(host:port)/db?params."""

    DataSource: str = ""


@dataclass(frozen=True)
class SQLiteConf:
    """An SQLite file (embedded mode)."""

    Path: str = ""


@dataclass(frozen=True)
class RedisNode:
    """One entry of go-zero's cache.CacheConf."""

    Host: str = "127.0.0.1:6379"
    Type: str = "node"
    Pass: str = ""


@dataclass(frozen=True)
class TelemetryConf:
    """go-zero's trace.Config. Batcher: otlpgrpc (Jaeger accepts OTLP), console, or none."""

    Name: str = ""
    Endpoint: str = ""
    Sampler: float = 1.0
    Batcher: str = "none"


@dataclass(frozen=True)
class LogConf:
    """Log level (go-zero's Log.Level)."""

    Level: str = "info"


@dataclass(frozen=True)
class RpcServerConf:
    """What the two rpc services share (go-zero's zrpc.RpcServerConf plus storage)."""

    Name: str = ""
    ListenOn: str = "0.0.0.0:8080"
    Etcd: EtcdConf | None = None
    MySQL: MySQLConf | None = None
    SQLite: SQLiteConf | None = None
    CacheRedis: list[RedisNode] = field(default_factory=list)
    # Where the sub-transaction barrier table is: DTM's `dtm_barrier.barrier` on MySQL.
    BarrierTable: str = "dtm_barrier.barrier"
    Telemetry: TelemetryConf = field(default_factory=TelemetryConf)
    Log: LogConf = field(default_factory=LogConf)


@dataclass(frozen=True)
class UserConf(RpcServerConf):
    """user rpc."""

    # How long a cached row lives, and the placeholder cached for a missing id (seconds).
    CacheExpire: int = 604800
    CacheNotFoundExpire: int = 60


@dataclass(frozen=True)
class UserScoreConf(RpcServerConf):
    """user-score rpc. ScoreBudget: points that may be granted in total (0 = none)."""

    ScoreBudget: int = 1000


@dataclass(frozen=True)
class AuthConf:
    """JWT signing: HS256 secret and lifetime in seconds."""

    Secret: str = ""
    ExpireIn: int = 604800


@dataclass(frozen=True)
class PrometheusConf:
    """Where user-api serves its metrics (Port 0: no metrics server)."""

    Host: str = "127.0.0.1"
    Port: int = 9081
    Path: str = "/metrics"


@dataclass(frozen=True)
class UserApiConf:
    """user-api (go-zero rest.RestConf plus the rpc clients, Auth, Prometheus, Telemetry).

    DtmServer is dtmx's gRPC address, or `etcd://host:2379/dtmservice` as go-zero's dtm
    driver spells it. BranchTarget says how saga branch URLs name the rpc services:
    `address` (resolved here, host:port) or `etcd` (etcd://.../user.rpc, resolved by dtmx).
    """

    Name: str = "userapi-api"
    Host: str = "0.0.0.0"
    Port: int = 8888
    UserRpc: RpcClientConf = field(default_factory=RpcClientConf)
    UserScoreRpc: RpcClientConf = field(default_factory=RpcClientConf)
    DtmServer: str = "127.0.0.1:36790"
    BranchTarget: str = "address"
    # How long POST /user/register waits for the saga before answering "pending" (seconds).
    RegisterTimeout: float = 5.0
    RegisterScore: int = 10
    Auth: AuthConf = field(default_factory=AuthConf)
    Prometheus: PrometheusConf = field(default_factory=PrometheusConf)
    Telemetry: TelemetryConf = field(default_factory=TelemetryConf)
    Log: LogConf = field(default_factory=LogConf)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise ConfigError(f"environment variable {name} is not set")
        return default

    return _ENV.sub(sub, value)


def _convert(path: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _convert(path, args[0], value)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping")
        return build(typing.cast(type[Any], hint), value, f"{path}.")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list")
        return [_convert(f"{path}[{i}]", item, v) for i, v in enumerate(value)]
    if isinstance(value, str):
        value = _expand(value)
    try:
        if hint is bool:
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if hint in (int, float):
            if isinstance(value, bool):
                raise ValueError
            return hint(value)
        if hint is str:
            if isinstance(value, dict | list):
                raise ValueError
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: invalid value {value!r}") from None
    raise ConfigError(f"{path}: unsupported type {hint!r}")


def build(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """`cls` from a mapping; unknown keys and bad values raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    kwargs = {k: _convert(prefix + k, hints[k], v) for k, v in data.items()}
    return cls(**kwargs)


def load(cls: type[T], path: str | os.PathLike[str]) -> T:
    """Read the YAML file at `path` into `cls`."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a YAML mapping")
    return build(cls, data)


def host_port(address: str) -> tuple[str, int]:
    """("0.0.0.0", 8080) from "0.0.0.0:8080"."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address {address!r} must be host:port")
    return host or "0.0.0.0", int(port)
