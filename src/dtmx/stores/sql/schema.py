"""Versioned schema migrations, kept as .sql files next to this module.

Files are named `<dialect>_<NNNN>_<what>.sql` (e.g. `mysql_0001_init.sql`); the applied
versions are rows of `dtmx_schema_version` (created from `<dialect>_version_table.sql`).
Migrating takes a database-wide lock, so several servers starting at once apply each file
once. `check` refuses to run against a schema that is behind (or ahead of) the code.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

from dtmx.errors import StoreError
from dtmx.store_settings import StoreDriver
from dtmx.stores.sql.conn import Backend, Executor, Tx
from dtmx.stores.sql.dialect import Dialect

_FILE = re.compile(r"^(sqlite|mysql|postgres)_(\d{4})_[a-z0-9_]+\.sql$")
#: A statement adding one column, without IF NOT EXISTS (SQLite and MySQL have none):
#: skipped when the column is there, so a migration may run again over what it made.
_ADD_COLUMN = re.compile(r"^ALTER TABLE (\w+) ADD COLUMN (?!IF\b)(\w+)\b[^,]*$", re.I)

@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema change; applied once, in order."""

    version: int
    name: str
    sql: str


def _read(name: str) -> str:
    return resources.files("dtmx.stores.sql").joinpath(name).read_text(encoding="utf-8")


def migrations(kind: StoreDriver) -> list[Migration]:
    """The migrations of one dialect, oldest first."""
    out = []
    for entry in resources.files("dtmx.stores.sql").iterdir():
        m = _FILE.match(entry.name)
        if m and m.group(1) == kind.value:
            out.append(Migration(int(m.group(2)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(out, key=lambda mig: mig.version)


def code_version(kind: StoreDriver) -> int:
    """The schema version this code expects."""
    return max((m.version for m in migrations(kind)), default=0)


def split_statements(script: str) -> list[str]:
    """Statements of a script: `--` comment lines dropped, split at `;` ending a line."""
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    out = []
    for chunk in re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE):
        if chunk.strip():
            out.append(chunk.strip())
    return out


async def _version(ex: Executor, d: Dialect) -> int | None:
    """The recorded version; None if nothing is recorded (no table, or no row yet: a
    first migration may be under way on another server)."""
    if not await ex.fetch(d.has_table, ["dtmx_schema_version"]):
        return None
    rows = await ex.fetch("SELECT MAX(version) FROM dtmx_schema_version")
    return None if not rows or rows[0][0] is None else int(rows[0][0])


async def schema_version(backend: Backend) -> int | None:
    """The version recorded in the database; None if there is no dtmx schema at all."""
    async with backend.session() as ex:
        return await _version(ex, backend.dialect)


@asynccontextmanager
async def _locked(backend: Backend) -> AsyncIterator[Tx]:
    """A transaction holding the database-wide migration lock, with the version table."""
    d = backend.dialect
    async with backend.transaction() as tx:
        for stmt in d.migrate_lock:
            await tx.fetch(stmt)
        try:
            for stmt in split_statements(_read(f"{d.kind.value}_version_table.sql")):
                await tx.execute(stmt, None)
            yield tx
        finally:
            if d.migrate_unlock:
                await tx.fetch(d.migrate_unlock)


async def _apply(tx: Tx, backend: Backend, current: int) -> list[int]:
    applied: list[int] = []
    for mig in migrations(backend.dialect.kind):
        if mig.version <= current:
            continue
        for stmt in split_statements(mig.sql):
            add = _ADD_COLUMN.match(stmt)
            if add and await tx.fetch(backend.dialect.has_column, [add[1], add[2]]):
                continue
            await tx.execute(stmt, None)
        await tx.execute(
            "INSERT INTO dtmx_schema_version (version, applied_at) VALUES (?, ?)",
            [mig.version, backend.dialect.ts(time.time())],
        )
        applied.append(mig.version)
    return applied


async def migrate(backend: Backend) -> list[int]:
    """Apply the migrations the database lacks; returns the versions applied."""
    async with _locked(backend) as tx:
        return await _apply(tx, backend, await _version(tx, backend.dialect) or 0)


def _require_current(kind: StoreDriver, have: int) -> None:
    want = code_version(kind)
    if have < want:
        raise StoreError(
            f"the {kind.value} store schema is at version {have} but this dtmx needs"
            f" version {want}: run `dtmx migrate` to upgrade it"
        )
    if have > want:
        raise StoreError(
            f"the {kind.value} store schema is at version {have}, newer than this dtmx"
            f" (version {want}): upgrade dtmx"
        )


async def check(backend: Backend, *, create: bool) -> None:
    """Create the schema on first start (with `create`); refuse a schema that does not
    match the code, telling the operator what to do. Under the migration lock, so servers
    starting together neither race the DDL nor see a half-made schema."""
    kind = backend.dialect.kind
    if not create:
        have = await schema_version(backend)
        if have is None:
            raise StoreError(
                f"the {kind.value} store has no dtmx schema: run `dtmx migrate` first"
            )
        _require_current(kind, have)
        return
    async with _locked(backend) as tx:
        have = await _version(tx, backend.dialect)
        if have is None:
            await _apply(tx, backend, 0)
            return
        _require_current(kind, have)
