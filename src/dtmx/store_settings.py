"""The `Store` block of the settings, and where it says the store is.

Apart from `dtmx.settings` so that the stores can read it without the rest; `dtmx.settings`
builds it from YAML and the environment like every other block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import quote, unquote, urlparse

from dtmx.errors import ConfigError


class StoreDriver(StrEnum):
    """Which store: `Store.Driver` (DTM's names; DTM's boltdb is not supported)."""

    SQLITE = "sqlite"
    MYSQL = "mysql"
    POSTGRES = "postgres"
    REDIS = "redis"


#: The ports the drivers listen on unless `Store.Port` says otherwise.
_DEFAULT_PORTS = {StoreDriver.MYSQL: 3306, StoreDriver.POSTGRES: 5432, StoreDriver.REDIS: 6379,
                  StoreDriver.SQLITE: 0}


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """DTM's `Store` keys (see the README's configuration table)."""

    Driver: StoreDriver = StoreDriver.SQLITE
    Host: str = "127.0.0.1"
    Port: int = 0
    User: str = ""
    Password: str = field(default="", repr=False)
    Db: str = ""
    Schema: str = "public"
    RedisPrefix: str = "{a}"
    #: partitions of a Redis store (power of two); fixed when the store is first opened
    RedisPartitions: int = 64
    Url: str = field(default="", repr=False)
    MaxOpenConns: int = 64
    #: MySQL/PostgreSQL: round trips of compare-and-set updates in flight at once; updates
    #: ready meanwhile share the next one (0: every update alone)
    WriteBatchLanes: int = 2
    DataExpire: int = 604800
    FinishedDataExpire: int = 86400


@dataclass(frozen=True, slots=True)
class StoreTarget:
    """Where the store is, resolved from Store.Url or the Driver/Host/... keys."""

    driver: StoreDriver
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    db: str
    schema: str
    prefix: str
    url: str = field(repr=False)


def store_target(st: StoreSettings) -> StoreTarget:
    """Where the store is: `Store.Url` if set, else the Driver/Host/... keys with each
    driver's defaults. Raises ConfigError for a Store.Url of an unknown scheme or a port
    that is not a number in 0..65535 (messages leave the URL out: it may hold a password)."""
    if st.Url:
        u = urlparse(st.Url)
        scheme = u.scheme.split("+")[0]  # mysql+asyncmy:// and the like
        try:
            # rediss:// is Redis over TLS (dtmx.security.tls, Tls.StoreCaFile)
            driver = StoreDriver({"postgresql": "postgres", "rediss": "redis"}.get(scheme, scheme))
        except ValueError:
            raise ConfigError(f"Store.Url: unsupported scheme {scheme!r}") from None
        try:
            port = u.port or 0
        except ValueError:
            raise ConfigError("Store.Url: the port must be a number in 0..65535") from None
        sqlite = driver is StoreDriver.SQLITE
        db = unquote(u.path) if sqlite else u.path.lstrip("/")
        if sqlite and u.netloc:
            db = u.netloc + u.path
        return StoreTarget(
            driver, u.hostname or "127.0.0.1", port, unquote(u.username or ""),
            unquote(u.password or ""), db, st.Schema, st.RedisPrefix, st.Url,
        )
    db = st.Db or {StoreDriver.SQLITE: "dtmx.db", StoreDriver.REDIS: "0"}.get(st.Driver, "dtm")
    url = ""
    if st.Driver is StoreDriver.REDIS:
        auth = f":{quote(st.Password, safe='')}@" if st.Password else ""
        url = f"redis://{auth}{st.Host}:{st.Port or 6379}/{db}"
    return StoreTarget(
        st.Driver, st.Host, st.Port or _DEFAULT_PORTS[st.Driver], st.User, st.Password, db,
        st.Schema, st.RedisPrefix, url,
    )
