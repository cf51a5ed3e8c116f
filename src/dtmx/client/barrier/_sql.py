"""The barrier table's SQL, per dialect: DDL and the two statements the algorithm runs.

The table is DTM's `dtm_barrier.barrier` column for column (same names, types, unique key), so
a service can switch between DTM's clients and dtmx without moving data. Values always travel
as bound parameters; the table name is the only thing put into SQL text, and it is checked to
be a plain (optionally schema-qualified) identifier first.
"""

from __future__ import annotations

import re
from enum import StrEnum

from dtmx.wire import BARRIER_TABLE

DEFAULT_TABLE = BARRIER_TABLE

# What each row carries, in the order of DTM's insert.
INSERT_COLUMNS = ("trans_type", "gid", "branch_id", "op", "barrier_id", "reason")
# The unique key; a row is found by these.
KEY_COLUMNS = ("gid", "branch_id", "op", "barrier_id")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Dialect(StrEnum):
    """SQL dialect of the database that holds the barrier table."""

    MYSQL = "mysql"
    POSTGRES = "postgres"
    SQLITE = "sqlite"


class ParamStyle(StrEnum):
    """How a driver spells bound parameters (PEP 249 names, plus asyncpg's `$n`)."""

    QMARK = "qmark"  # sqlite3, aiosqlite: ?
    FORMAT = "format"  # pymysql, asyncmy, psycopg: %s
    NUMERIC = "numeric"  # asyncpg: $1
    NAMED = "named"  # SQLAlchemy text(): :name

    def marks(self, names: tuple[str, ...]) -> list[str]:
        """One placeholder per named value, in order."""
        if self is ParamStyle.QMARK:
            return ["?"] * len(names)
        if self is ParamStyle.FORMAT:
            return ["%s"] * len(names)
        if self is ParamStyle.NUMERIC:
            return [f"${i}" for i in range(1, len(names) + 1)]
        return [f":{n}" for n in names]


def split_table(table: str) -> tuple[str | None, str]:
    """(schema, name) of a table name; raise ValueError unless it is a plain identifier."""
    parts = table.split(".")
    if not 1 <= len(parts) <= 2 or not all(_IDENT.fullmatch(p) for p in parts):
        raise ValueError(f"invalid barrier table name {table!r}: expected name or schema.name")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def insert_ignore_sql(dialect: Dialect, style: ParamStyle, table: str) -> str:
    """INSERT of one barrier row that does nothing (0 rows) when the unique key exists."""
    split_table(table)
    cols = ", ".join(INSERT_COLUMNS)
    values = ", ".join(style.marks(INSERT_COLUMNS))
    if dialect is Dialect.MYSQL:
        return f"INSERT IGNORE INTO {table}({cols}) VALUES ({values})"
    if dialect is Dialect.SQLITE:
        return f"INSERT OR IGNORE INTO {table}({cols}) VALUES ({values})"
    # No conflict target: works whatever the unique constraint is called (DTM names it
    # uniq_barrier, but a table made by hand may use a unique index instead).
    return f"INSERT INTO {table}({cols}) VALUES ({values}) ON CONFLICT DO NOTHING"


def select_reason_sql(style: ParamStyle, table: str) -> str:
    """SELECT of the reason of the row with a given unique key."""
    split_table(table)
    marks = style.marks(KEY_COLUMNS)
    where = " AND ".join(f"{c} = {m}" for c, m in zip(KEY_COLUMNS, marks, strict=True))
    return f"SELECT reason FROM {table} WHERE {where}"


def ddl(dialect: Dialect | str, table: str = DEFAULT_TABLE) -> list[str]:
    """The CREATE statements (idempotent) for the barrier table on `dialect`.

    MySQL and PostgreSQL get DTM's own layout (database or schema, table, and for PostgreSQL
    the id sequence and the `uniq_<name>` constraint, i.e. `uniq_barrier` by default). SQLite
    has no schemas: a qualified name means an attached database, which must already be
    attached under that name (see the package documentation).
    """
    dialect = Dialect(dialect)
    schema, name = split_table(table)
    prefix = f"{schema}." if schema else ""
    if dialect is Dialect.MYSQL:
        out = []
        if schema:
            out.append(
                f"CREATE DATABASE IF NOT EXISTS {schema} /*!40100 DEFAULT CHARACTER SET utf8mb4 */"
            )
        out.append(
            f"CREATE TABLE IF NOT EXISTS {table}(\n"
            "  id bigint(22) PRIMARY KEY AUTO_INCREMENT,\n"
            "  trans_type varchar(45) default '',\n"
            "  gid varchar(128) default '',\n"
            "  branch_id varchar(128) default '',\n"
            "  op varchar(45) default '',\n"
            "  barrier_id varchar(45) default '',\n"
            "  reason varchar(45) default '' comment 'the branch type who insert this record',\n"
            "  create_time datetime DEFAULT now(),\n"
            "  update_time datetime DEFAULT now(),\n"
            "  key(create_time),\n"
            "  key(update_time),\n"
            "  UNIQUE key(gid, branch_id, op, barrier_id)\n"
            ") ENGINE = InnoDB DEFAULT CHARSET = utf8mb4"
        )
        return out
    if dialect is Dialect.POSTGRES:
        out = [f"CREATE SCHEMA IF NOT EXISTS {schema}"] if schema else []
        seq = f"{prefix}{name}_seq"
        out.append(f"CREATE SEQUENCE IF NOT EXISTS {seq}")
        out.append(
            f"CREATE TABLE IF NOT EXISTS {table}(\n"
            f"  id bigint NOT NULL DEFAULT NEXTVAL ('{seq}'),\n"
            "  trans_type varchar(45) default '',\n"
            "  gid varchar(128) default '',\n"
            "  branch_id varchar(128) default '',\n"
            "  op varchar(45) default '',\n"
            "  barrier_id varchar(45) default '',\n"
            "  reason varchar(45) default '',\n"
            "  create_time timestamp(0) with time zone DEFAULT NULL,\n"
            "  update_time timestamp(0) with time zone DEFAULT NULL,\n"
            "  PRIMARY KEY(id),\n"
            f"  CONSTRAINT uniq_{name} unique(gid, branch_id, op, barrier_id)\n"
            ")"
        )
        return out
    return [
        f"CREATE TABLE IF NOT EXISTS {table}(\n"
        "  id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "  trans_type varchar(45) default '',\n"
        "  gid varchar(128) default '',\n"
        "  branch_id varchar(128) default '',\n"
        "  op varchar(45) default '',\n"
        "  barrier_id varchar(45) default '',\n"
        "  reason varchar(45) default '',\n"
        "  create_time datetime DEFAULT CURRENT_TIMESTAMP,\n"
        "  update_time datetime DEFAULT CURRENT_TIMESTAMP,\n"
        "  UNIQUE(gid, branch_id, op, barrier_id)\n"
        ")",
        # SQLite's CREATE INDEX takes the schema on the index name, not on the table.
        f"CREATE INDEX IF NOT EXISTS {prefix}{name}_create_time ON {name}(create_time)",
        f"CREATE INDEX IF NOT EXISTS {prefix}{name}_update_time ON {name}(update_time)",
    ]
