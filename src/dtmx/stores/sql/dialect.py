"""What differs between the SQL databases, as data: placeholders, time columns, snippets.

Store code writes every statement with `?` placeholders; `Dialect.q` turns them into the
driver's style once per statement text (cached). Nothing here does I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from dtmx.store_settings import StoreDriver


class Dialect:
    """SQLite flavour; the other databases override what differs."""

    kind: StoreDriver = StoreDriver.SQLITE
    #: appended to the SELECT that picks rows to claim, so concurrent claimers skip each
    #: other's rows instead of waiting (SQLite serialises writers with BEGIN IMMEDIATE).
    skip_locked: str = ""
    #: appended to a SELECT that must lock the row it reads until the transaction ends.
    for_update: str = ""
    #: statements taking (and the one releasing) the database-wide migration lock inside
    #: the migration's transaction. SQLite needs none: it migrates under BEGIN IMMEDIATE.
    migrate_lock: tuple[str, ...] = ()
    migrate_unlock: str = ""
    #: does a table exist? (one `?`: the table name)
    has_table: str = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    #: does a table have a column? (`?`s: the table, the column)
    has_column: str = "SELECT 1 FROM pragma_table_info(?) WHERE name = ?"

    def q(self, sql: str) -> str:
        """The statement in the driver's placeholder style."""
        return sql

    def ts(self, t: float | None) -> Any:
        """A time parameter: float epoch seconds to the column's type."""
        return t

    def from_ts(self, v: Any) -> float | None:
        """A time column's value back to float epoch seconds."""
        return None if v is None else float(v)

    def set_retry_count(self) -> str:
        """An expression for the new `options` with `retry_count` = the one `?` parameter."""
        return "json_set(COALESCE(NULLIF(options, ''), '{}'), '$.retry_count', ?)"


class MysqlDialect(Dialect):
    """MySQL/MariaDB: `%s` placeholders, naive UTC DATETIME(3), JSON_SET for options."""

    kind = StoreDriver.MYSQL
    skip_locked = " FOR UPDATE SKIP LOCKED"
    for_update = " FOR UPDATE"
    # notes off: "table already exists" notes would make asyncmy log them and fetch them
    # with an extra SHOW WARNINGS
    migrate_lock = ("SET SESSION sql_notes = 0", "SELECT GET_LOCK('dtmx_migrate', 60)")
    migrate_unlock = "SELECT RELEASE_LOCK('dtmx_migrate')"
    has_table = (
        "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE()"
        " AND table_name = ?"
    )
    has_column = (
        "SELECT 1 FROM information_schema.columns WHERE table_schema = DATABASE()"
        " AND table_name = ? AND column_name = ?"
    )

    def q(self, sql: str) -> str:
        """`sql` with its `?` placeholders in this driver's style."""
        return _mysql_q(sql)

    # DATETIME(6) has no zone: we store naive UTC and never use the server's NOW().
    def ts(self, t: float | None) -> Any:
        """An epoch time as the value this column type stores (None stays None)."""
        return None if t is None else datetime.fromtimestamp(t, UTC).replace(tzinfo=None)

    def from_ts(self, v: Any) -> float | None:
        """A stored time back as epoch seconds."""
        if v is None:
            return None
        assert isinstance(v, datetime)
        return v.replace(tzinfo=UTC).timestamp()

    def set_retry_count(self) -> str:
        """SQL that sets options.retry_count to the bound value."""
        return "JSON_SET(COALESCE(NULLIF(options, ''), '{}'), '$.retry_count', ?)"


class PostgresDialect(Dialect):
    """PostgreSQL: `$n` placeholders, timestamptz, jsonb_set for options."""

    kind = StoreDriver.POSTGRES
    skip_locked = " FOR UPDATE SKIP LOCKED"
    for_update = " FOR UPDATE"
    migrate_lock = ("SELECT pg_advisory_xact_lock(727001)",)
    has_table = "SELECT 1 WHERE to_regclass(?) IS NOT NULL"
    has_column = (
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = ? AND column_name = ?"
    )

    def q(self, sql: str) -> str:
        """`sql` with its `?` placeholders in this driver's style."""
        return _postgres_q(sql)

    def ts(self, t: float | None) -> Any:
        """An epoch time as the value this column type stores (None stays None)."""
        return None if t is None else datetime.fromtimestamp(t, UTC)

    def from_ts(self, v: Any) -> float | None:
        """A stored time back as epoch seconds."""
        if v is None:
            return None
        assert isinstance(v, datetime)
        return v.timestamp()

    def set_retry_count(self) -> str:
        """SQL that sets options.retry_count to the bound value."""
        return (
            "(jsonb_set(COALESCE(NULLIF(options, ''), '{}')::jsonb, '{retry_count}',"
            " to_jsonb(?::bigint)))::text"
        )


@lru_cache(maxsize=512)
def _mysql_q(sql: str) -> str:
    # asyncmy formats with %, so a literal % must be doubled.
    return sql.replace("%", "%%").replace("?", "%s")


@lru_cache(maxsize=512)
def _postgres_q(sql: str) -> str:
    parts = sql.split("?")
    out = [parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        out.append(f"${i}")
        out.append(part)
    return "".join(out)


SQLITE = Dialect()
MYSQL = MysqlDialect()
POSTGRES = PostgresDialect()
