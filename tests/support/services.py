"""Where the test services are: MariaDB, PostgreSQL and Redis, from env vars with defaults.

The defaults match the project's machines (and what scripts/services.sh sets up on a fresh one):
MariaDB root with an empty password, PostgreSQL `postgres` with trust auth, Redis without auth,
all on 127.0.0.1. Set these to point the tests elsewhere:

  DTMX_TEST_MYSQL_HOST, DTMX_TEST_MYSQL_PORT, DTMX_TEST_MYSQL_USER, DTMX_TEST_MYSQL_PASSWORD
  DTMX_TEST_PG_HOST, DTMX_TEST_PG_PORT, DTMX_TEST_PG_USER, DTMX_TEST_PG_PASSWORD
  DTMX_TEST_REDIS_URL (redis://[user:password@]host:port/db)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit


@dataclass(frozen=True)
class DbParams:
    """Connection parameters of one SQL server."""

    host: str
    port: int
    user: str
    password: str

    def kwargs(self, db: str | None = None, *, db_key: str = "database") -> dict[str, Any]:
        """Keyword arguments for a driver's connect(); `db_key` is "db" for asyncmy/pymysql."""
        out: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
        }
        if db is not None:
            out[db_key] = db
        return out


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def mysql() -> DbParams:
    """MariaDB/MySQL connection parameters."""
    return DbParams(
        host=_env("DTMX_TEST_MYSQL_HOST", "127.0.0.1"),
        port=int(_env("DTMX_TEST_MYSQL_PORT", "3306")),
        user=_env("DTMX_TEST_MYSQL_USER", "root"),
        password=_env("DTMX_TEST_MYSQL_PASSWORD", ""),
    )


def postgres() -> DbParams:
    """PostgreSQL connection parameters."""
    return DbParams(
        host=_env("DTMX_TEST_PG_HOST", "127.0.0.1"),
        port=int(_env("DTMX_TEST_PG_PORT", "5432")),
        user=_env("DTMX_TEST_PG_USER", "postgres"),
        password=_env("DTMX_TEST_PG_PASSWORD", ""),
    )


def _url(scheme: str, p: DbParams, db: str) -> str:
    auth = quote(p.user, safe="")
    if p.password:
        auth += ":" + quote(p.password, safe="")
    return f"{scheme}://{auth}@{p.host}:{p.port}/{quote(db, safe='')}"


def mysql_dsn(db: str = "", scheme: str = "mysql") -> str:
    """URL form, e.g. mysql://root@127.0.0.1:3306/dtm; `scheme="mysql+pymysql"` for SQLAlchemy."""
    return _url(scheme, mysql(), db)


def pg_dsn(db: str = "postgres", scheme: str = "postgresql") -> str:
    """URL form, e.g. postgresql://postgres@127.0.0.1:5432/postgres (asyncpg, psycopg)."""
    return _url(scheme, postgres(), db)


def redis_url() -> str:
    """Redis URL, e.g. redis://127.0.0.1:6379/0."""
    return _env("DTMX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_params() -> dict[str, Any]:
    """host/port/db/password of `redis_url()`, for configs that take them apart."""
    u = urlsplit(redis_url())
    path = u.path.lstrip("/")
    return {
        "host": u.hostname or "127.0.0.1",
        "port": u.port or 6379,
        "db": int(path) if path else 0,
        "username": u.username,
        "password": u.password,
    }


def store_conf(driver: str, db: str = "dtm") -> dict[str, Any]:
    """A server config `Store` block (DTM's field names) for mysql, postgres or redis."""
    if driver == "mysql":
        p = mysql()
    elif driver == "postgres":
        p = postgres()
    elif driver == "redis":
        r = redis_params()
        return {
            "Driver": "redis",
            "Host": r["host"],
            "Port": r["port"],
            "User": r["username"] or "",
            "Password": r["password"] or "",
        }
    else:
        raise ValueError(f"unknown driver {driver!r}")
    return {
        "Driver": driver,
        "Host": p.host,
        "Port": p.port,
        "User": p.user,
        "Password": p.password,
        "Db": db,
    }


STORES = ("sqlite", "mysql", "postgres", "redis")


def store_block(driver: str, name: str, workdir: str) -> dict[str, Any]:
    """The YAML `Store` block of a dtmx server on `driver`, isolated under `name`
    (a MySQL database, a PostgreSQL schema, a Redis key prefix or a SQLite file)."""
    if driver == "sqlite":
        return {"Driver": "sqlite", "Db": os.path.join(workdir, f"{name}.db")}
    if driver == "mysql":
        p = mysql()
        return {"Driver": "mysql", "Host": p.host, "Port": p.port, "User": p.user,
                "Password": p.password, "Db": name}
    if driver == "postgres":
        p = postgres()
        return {"Driver": "postgres", "Host": p.host, "Port": p.port, "User": p.user,
                "Password": p.password, "Db": "postgres", "Schema": name}
    if driver == "redis":
        u = urlsplit(os.environ.get("DTMX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
        return {"Driver": "redis", "Host": u.hostname or "127.0.0.1", "Port": u.port or 6379,
                "Password": u.password or "", "Db": (u.path or "/0").lstrip("/") or "0",
                "RedisPrefix": "{" + name + "}"}
    raise ValueError(f"unknown store driver {driver}")
