"""SqlStore: the Store protocol over SQLite, MySQL/MariaDB and PostgreSQL.

One class for the three databases; what differs lives in the Dialect (placeholders, time
columns, snippets) and the Backend (driver, pool, error translation). The hot verbs
(`create`, `update`, `add_branches`, `take`) cost one network round trip each: on PostgreSQL
as single statements with data-modifying CTEs (`pg`), on MySQL as one multi-statement
transaction (`my`); SQLite runs in-process and uses plain transactions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from dtmx.core.models import (
    KV,
    UNFINISHED,
    Branch,
    Change,
    ScanFilter,
    Status,
    Transaction,
    TransType,
)
from dtmx.errors import DuplicateBranch
from dtmx.stores.sql import my, pg, schema
from dtmx.stores.sql.conn import Backend, Executor, Row, Statement, Tx, UniqueViolation
from dtmx.stores.sql.dialect import Kind
from dtmx.stores.sql.rows import (
    BRANCH_COLS,
    BRANCH_INSERT_COLS,
    KV_COLS,
    TRANS_COLS,
    TRANS_INSERT_COLS,
    UPDATE_BRANCH,
    branch_from_row,
    branch_params,
    kv_from_row,
    parse_position,
    placeholders,
    trans_from_row,
    trans_params,
)

_UNFINISHED = [s.value for s in UNFINISHED]
_FINISHED = [Status.SUCCEED.value, Status.FAILED.value]
_IN_UNFINISHED = f"status IN ({placeholders(len(_UNFINISHED))})"
_INSERT_TRANS = f"INSERT INTO trans_global ({TRANS_INSERT_COLS}) VALUES ({placeholders(17)})"
_INSERT_BRANCH = (
    f"INSERT INTO trans_branch_op ({BRANCH_INSERT_COLS}) VALUES ({placeholders(10)})"
)
#: Rows deleted per transaction by expire_finished.
EXPIRE_BATCH = 500


class SqlStore:
    """The SQL implementation of `dtmx.stores.base.Store`; build it with the factories
    `SqlStore.sqlite/mysql/postgres` (see the package docstring)."""

    def __init__(self, backend: Backend, *, create: bool = True) -> None:
        self.backend = backend
        self.roundtrips = 0
        self._create = create
        self._d = backend.dialect

    # ---- construction -------------------------------------------------------------
    @classmethod
    def sqlite(cls, path: str, *, create: bool = True) -> SqlStore:
        """A store in the SQLite file `path` (created with its schema on first open)."""
        from dtmx.stores.sql.sqlite_driver import SqliteBackend

        return cls(SqliteBackend(path), create=create)

    @classmethod
    def mysql(
        cls,
        host: str = "127.0.0.1",
        port: int = 3306,
        user: str = "root",
        password: str = "",
        db: str = "dtm",
        *,
        pool_size: int = 10,
        create: bool = True,
    ) -> SqlStore:
        """A store in MySQL/MariaDB database `db` (created if missing, with `create`)."""
        from dtmx.stores.sql.mysql_driver import MysqlBackend

        backend = MysqlBackend(
            host=host, port=port, user=user, password=password, db=db, pool_size=pool_size
        )
        return cls(backend, create=create)

    @classmethod
    def postgres(
        cls,
        host: str = "127.0.0.1",
        port: int = 5432,
        user: str = "postgres",
        password: str = "",
        db: str = "postgres",
        schema: str = "public",
        *,
        pool_size: int = 10,
        create: bool = True,
    ) -> SqlStore:
        """A store in PostgreSQL database `db` (must exist), tables in `schema`."""
        from dtmx.stores.sql.postgres_driver import PostgresBackend

        backend = PostgresBackend(
            host=host,
            port=port,
            user=user,
            password=password,
            db=db,
            schema=schema,
            pool_size=pool_size,
        )
        return cls(backend, create=create)

    # ---- lifecycle ----------------------------------------------------------------
    async def open(self) -> None:
        """Connect, create the schema on first start, refuse a schema behind the code."""
        await self.backend.open(create=self._create)
        try:
            await schema.check(self.backend, create=self._create)
        except BaseException:
            await self.backend.close()
            raise

    async def migrate(self) -> list[int]:
        """Bring the schema up to this code's version (`dtmx migrate`); versions applied."""
        return await schema.migrate(self.backend)

    async def schema_version(self) -> int | None:
        """The schema version recorded in the database (None: no dtmx schema yet)."""
        return await schema.schema_version(self.backend)

    async def close(self) -> None:
        await self.backend.close()

    async def ping(self) -> None:
        async with self._session() as ex:
            await ex.fetch("SELECT 1")

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Executor]:
        self.roundtrips += 1
        async with self.backend.session() as ex:
            yield ex

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Tx]:
        self.roundtrips += 1
        async with self.backend.transaction() as tx:
            yield tx

    async def _script(self, statements: Sequence[Statement]) -> list[tuple[int, list[Row]]]:
        self.roundtrips += 1
        return await self.backend.script(statements)

    # ---- transactions -------------------------------------------------------------
    async def create(self, *, trans: Transaction, branches: Sequence[Branch]) -> bool:
        d = self._d
        try:
            if d.kind is Kind.POSTGRES and branches:
                sql, args = pg.create(trans, branches)
                async with self._session() as ex:
                    return bool((await ex.fetch(sql, args))[0][0])
            if not branches:
                async with self._session() as ex:
                    await ex.execute(_INSERT_TRANS, trans_params(trans, d))
                    return True
            if d.kind is Kind.MYSQL:
                try:
                    await self._script(my.create((_INSERT_TRANS, trans_params(trans, d)),
                                                 [branch_params(b, d) for b in branches]))
                except UniqueViolation as e:
                    if e.statement == 0:  # the gid exists
                        return False
                    raise
                return True
            async with self._tx() as tx:
                try:
                    await tx.execute(_INSERT_TRANS, trans_params(trans, d))
                except UniqueViolation:
                    tx.rollback_only()
                    return False
                await tx.executemany(_INSERT_BRANCH, [branch_params(b, d) for b in branches])
                return True
        except UniqueViolation as e:
            # With branches, a gid conflict never gets here (caught above, or DO NOTHING on
            # Postgres): the duplicate is among the branches themselves.
            if branches:
                raise DuplicateBranch(gid=trans.gid) from e
            return False

    async def get(self, *, gid: str) -> Transaction | None:
        async with self._session() as ex:
            rows = await ex.fetch(f"SELECT {TRANS_COLS} FROM trans_global WHERE gid = ?", [gid])
        return trans_from_row(rows[0], self._d) if rows else None

    async def get_branches(self, *, gid: str) -> list[Branch]:
        async with self._session() as ex:
            rows = await ex.fetch(
                f"SELECT {BRANCH_COLS} FROM trans_branch_op WHERE gid = ? ORDER BY id", [gid]
            )
        return [branch_from_row(r, self._d) for r in rows]

    def _global_update(
        self, gid: str, now: float, expect_status: Status, expect_owner: str | None, c: Change
    ) -> tuple[str, list[Any]]:
        d = self._d
        sets, args = ["update_time = ?"], [d.ts(now)]
        if c.status is not None:
            sets.append("status = ?")
            args.append(c.status.value)
            if c.status is Status.SUCCEED:
                sets.append("finish_time = ?")
                args.append(d.ts(now))
            elif c.status is Status.FAILED:
                sets.append("rollback_time = ?")
                args.append(d.ts(now))
        for col, value in (
            ("next_cron_time", d.ts(c.next_cron_time)),
            ("next_cron_interval", c.next_cron_interval),
            ("owner", c.owner),
            ("rollback_reason", c.rollback_reason),
            ("result", c.result),
        ):
            if value is not None:
                sets.append(f"{col} = ?")
                args.append(value)
        if c.retry_count is not None:
            sets.append(f"options = {d.set_retry_count()}")
            args.append(c.retry_count)
        where = "gid = ? AND status = ?"
        args += [gid, expect_status.value]
        if expect_owner is not None:
            where += " AND owner = ?"
            args.append(expect_owner)
        return f"UPDATE trans_global SET {', '.join(sets)} WHERE {where}", args

    async def update(
        self,
        *,
        gid: str,
        now: float,
        expect_status: Status,
        expect_owner: str | None,
        change: Change,
    ) -> bool:
        d = self._d
        sql, args = self._global_update(gid, now, expect_status, expect_owner, change)
        if not change.branches:
            async with self._session() as ex:
                return await ex.execute(sql, args) > 0
        if d.kind is Kind.POSTGRES:
            sql, args = pg.update_with_branches(sql, args, gid, now, change.branches)
            async with self._session() as ex:
                return bool((await ex.fetch(sql, args))[0][0])
        rows = [
            [
                b.status.value,
                d.ts(now),
                d.ts(now) if b.status.finished else None,
                gid,
                b.branch_id,
                b.op.value,
            ]
            for b in change.branches
        ]
        if d.kind is Kind.MYSQL:
            # one round trip; the branch rows change only if the compare-and-set matched
            return (await self._script(my.update((sql, args), rows)))[0][0] > 0
        async with self._tx() as tx:
            if await tx.execute(sql, args) == 0:
                tx.rollback_only()
                return False
            await tx.executemany(UPDATE_BRANCH, rows)
            return True

    async def take(
        self,
        *,
        gid: str,
        now: float,
        expect_status: Status,
        expect_type: TransType | None = None,
        change: Change,
    ) -> tuple[Transaction, list[Branch]] | None:
        if change.branches:
            raise ValueError("take does not write branches; use update")
        d = self._d
        sql, args = self._global_update(gid, now, expect_status, None, change)
        if expect_type is not None:
            sql += " AND trans_type = ?"  # the WHERE clause ends the statement
            args.append(expect_type.value)
        if d.kind is Kind.POSTGRES:
            sql, args = pg.take(sql, args, gid)
            async with self._session() as ex:
                rows = await ex.fetch(sql, args)
            if not rows:
                return None
            n = pg.TAKE_TRANS_WIDTH
            # a LEFT JOIN: a transaction without branches comes back as one row of NULLs
            branches = [branch_from_row(r[n:], d) for r in rows if r[n] is not None]
            return trans_from_row(rows[0][:n], d), branches
        if d.kind is Kind.MYSQL:
            results = await self._script(my.take((sql, args), gid))
            trows, brows = results[my.TAKE_TRANS][1], results[my.TAKE_BRANCHES][1]
            if not trows:
                return None
            return trans_from_row(trows[0], d), [branch_from_row(r, d) for r in brows]
        async with self._tx() as tx:
            trows = await tx.fetch(f"{sql} RETURNING {TRANS_COLS}", args)
            if not trows:
                tx.rollback_only()
                return None
            brows = await tx.fetch(
                f"SELECT {BRANCH_COLS} FROM trans_branch_op WHERE gid = ? ORDER BY id", [gid]
            )
        return trans_from_row(trows[0], d), [branch_from_row(r, d) for r in brows]

    async def add_branches(
        self, *, gid: str, now: float, branches: Sequence[Branch], expect_status: Status
    ) -> bool:
        d = self._d
        try:
            if d.kind is Kind.POSTGRES:
                sql, args = pg.add_branches(gid, now, branches, expect_status)
                async with self._session() as ex:
                    return bool((await ex.fetch(sql, args))[0][0])
            if d.kind is Kind.MYSQL:
                rows = [branch_params(b, d, now) for b in branches]
                results = await self._script(my.add_branches(gid, expect_status, rows))
                return results[0][0] > 0
            async with self._tx() as tx:
                found = await tx.fetch(
                    f"SELECT id FROM trans_global WHERE gid = ? AND status = ?{d.for_update}",
                    [gid, expect_status.value],
                )
                if not found:
                    tx.rollback_only()
                    return False
                if branches:
                    await tx.executemany(
                        _INSERT_BRANCH, [branch_params(b, d, now) for b in branches]
                    )
                return True
        except UniqueViolation as e:
            raise DuplicateBranch(gid=gid) from e

    async def claim_due(
        self, *, now: float, lease: float, owner: str, limit: int
    ) -> list[Transaction]:
        d = self._d
        pick = (
            f"SELECT id FROM trans_global WHERE {_IN_UNFINISHED} AND next_cron_time <= ?"
            f" ORDER BY next_cron_time LIMIT ?{d.skip_locked}"
        )
        pick_args = [*_UNFINISHED, d.ts(now), limit]
        if d.kind is not Kind.MYSQL:
            # One statement (MySQL cannot UPDATE a table it selects from with LIMIT). The
            # pick is a MATERIALIZED CTE: as a plain IN (subquery) Postgres may run the
            # LIMITed, SKIP LOCKED subquery more than once and claim more than `limit`.
            sql = (
                f"WITH picked AS MATERIALIZED ({pick})"
                " UPDATE trans_global SET owner = ?, next_cron_time = ?"
                f" WHERE id IN (SELECT id FROM picked) RETURNING {TRANS_COLS}"
            )
            args = [*pick_args, owner, d.ts(now + lease)]
            # SQLite: BEGIN IMMEDIATE serialises claimers of other processes; Postgres: the
            # single statement is atomic and SKIP LOCKED keeps claimers apart.
            claim = self._session() if d.kind is Kind.POSTGRES else self._tx()
            async with claim as ex:
                rows = await ex.fetch(sql, args)
        else:
            async with self._tx() as tx:
                ids = [r[0] for r in await tx.fetch(pick, pick_args)]
                if not ids:
                    return []
                in_ids = f"id IN ({placeholders(len(ids))})"
                await tx.execute(
                    f"UPDATE trans_global SET owner = ?, next_cron_time = ? WHERE {in_ids}",
                    [owner, d.ts(now + lease), *ids],
                )
                rows = await tx.fetch(f"SELECT {TRANS_COLS} FROM trans_global WHERE {in_ids}", ids)
        return sorted(
            (trans_from_row(r, d) for r in rows), key=lambda t: (t.next_cron_time or 0.0, t.gid)
        )

    async def reset_next_cron_time(self, *, gid: str, now: float) -> bool:
        async with self._session() as ex:
            n = await ex.execute(
                f"UPDATE trans_global SET next_cron_time = ? WHERE gid = ? AND {_IN_UNFINISHED}",
                [self._d.ts(now), gid, *_UNFINISHED],
            )
        return n > 0

    async def reset_cron_time(self, *, now: float, after: float, limit: int) -> tuple[int, bool]:
        d = self._d
        cond = f"{_IN_UNFINISHED} AND next_cron_time > ?"
        cond_args = [*_UNFINISHED, d.ts(now + after)]
        async with self._tx() as tx:
            # one row more than asked tells whether some remain
            ids = [
                r[0]
                for r in await tx.fetch(
                    f"SELECT id FROM trans_global WHERE {cond} ORDER BY id LIMIT ?",
                    [*cond_args, limit + 1],
                )
            ]
            todo = ids[:limit]
            if not todo:
                return 0, False
            n = await tx.execute(
                f"UPDATE trans_global SET next_cron_time = ?"
                f" WHERE id IN ({placeholders(len(todo))}) AND {cond}",
                [d.ts(now), *todo, *cond_args],
            )
        return n, len(ids) > limit

    async def scan(
        self, *, position: str, limit: int, filters: ScanFilter
    ) -> tuple[list[Transaction], str]:
        d = self._d
        where: list[str] = ["id < ?"]
        args: list[Any] = [parse_position(position)]
        if filters.status is not None:
            where.append("status = ?")
            args.append(filters.status.value)
        if filters.trans_type is not None:
            where.append("trans_type = ?")
            args.append(filters.trans_type.value)
        if filters.create_time_start is not None:
            where.append("create_time >= ?")
            args.append(d.ts(filters.create_time_start))
        if filters.create_time_end is not None:
            where.append("create_time <= ?")
            args.append(d.ts(filters.create_time_end))
        async with self._session() as ex:
            rows = await ex.fetch(
                f"SELECT {TRANS_COLS} FROM trans_global WHERE {' AND '.join(where)}"
                " ORDER BY id DESC LIMIT ?",
                [*args, limit + 1],
            )
        page = rows[:limit]
        nxt = str(page[-1][0]) if len(rows) > limit and page else ""
        return [trans_from_row(r, d) for r in page], nxt

    async def expire_finished(self, *, before: float, limit: int) -> int:
        d, done = self._d, 0
        while done < limit:
            batch = min(EXPIRE_BATCH, limit - done)
            async with self._tx() as tx:
                rows = await tx.fetch(
                    "SELECT id, gid FROM trans_global WHERE status IN (?, ?) AND update_time < ?"
                    f" LIMIT ?{d.for_update}",
                    [*_FINISHED, d.ts(before), batch],
                )
                if not rows:
                    break
                gids = [r[1] for r in rows]
                await tx.execute(
                    f"DELETE FROM trans_branch_op WHERE gid IN ({placeholders(len(gids))})", gids
                )
                n = await tx.execute(
                    f"DELETE FROM trans_global WHERE id IN ({placeholders(len(rows))})",
                    [r[0] for r in rows],
                )
            done += n
            if len(rows) < batch:
                break
        return done

    # ---- key-value ----------------------------------------------------------------
    async def kv_find(self, *, cat: str, key: str) -> KV | None:
        async with self._session() as ex:
            rows = await ex.fetch(f"SELECT {KV_COLS} FROM kv WHERE cat = ? AND k = ?", [cat, key])
        return kv_from_row(rows[0], self._d) if rows else None

    async def kv_scan(self, *, cat: str, position: str, limit: int) -> tuple[list[KV], str]:
        async with self._session() as ex:
            rows = await ex.fetch(
                f"SELECT {KV_COLS} FROM kv WHERE cat = ? AND id < ? ORDER BY id DESC LIMIT ?",
                [cat, parse_position(position), limit + 1],
            )
        page = rows[:limit]
        nxt = str(page[-1][0]) if len(rows) > limit and page else ""
        return [kv_from_row(r, self._d) for r in page], nxt

    async def kv_create(self, *, cat: str, key: str, value: str, now: float) -> bool:
        d = self._d
        try:
            async with self._session() as ex:
                await ex.execute(
                    "INSERT INTO kv (cat, k, v, version, create_time, update_time)"
                    " VALUES (?, ?, ?, 1, ?, ?)",
                    [cat, key, value, d.ts(now), d.ts(now)],
                )
        except UniqueViolation:
            return False
        return True

    async def kv_update(
        self, *, cat: str, key: str, value: str, expect_version: int, now: float
    ) -> bool:
        async with self._session() as ex:
            n = await ex.execute(
                "UPDATE kv SET v = ?, version = version + 1, update_time = ?"
                " WHERE cat = ? AND k = ? AND version = ?",
                [value, self._d.ts(now), cat, key, expect_version],
            )
        return n > 0

    async def kv_delete(self, *, cat: str, key: str) -> bool:
        async with self._session() as ex:
            n = await ex.execute("DELETE FROM kv WHERE cat = ? AND k = ?", [cat, key])
        return n > 0
