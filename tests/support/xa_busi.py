"""A branch service whose branches are XA transactions on MariaDB and PostgreSQL.

Routes `/<db>/<name>` (db: mysql or pg) are `dtmx.client.aiohttp_web.xa_handler`s writing
one row per branch to `dtm_barrier.xa_test_busi`; every call opens a fresh connection and
closes it, so each second phase finishes a transaction prepared on another connection.
`fail` makes a branch's action answer FAILURE; `down` makes a branch answer 500 to any op
before touching the database (a branch process that is not there).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncmy
import asyncpg
import psycopg
import pymysql
from aiohttp import web

from dtmx.client import DtmClient, Failure
from dtmx.client.aiohttp_web import xa_handler
from dtmx.client.barrier import ensure_table_sync
from tests.support import services
from tests.support.util import free_port

DBS = ("mysql", "pg")
# A database (MariaDB) / schema (PostgreSQL) of the XA tests' own, for the business and the
# barrier table: nothing else uses it, so these tests do not disturb others on the shared
# servers (prepared XA transactions hold their locks until the second phase).
SPACE = "dtmx_xa_test"
BUSI = f"{SPACE}.xa_test_busi"
BARRIER = f"{SPACE}.barrier"
_DDL = {
    "mysql": f"CREATE TABLE IF NOT EXISTS {BUSI} (gid VARCHAR(128) NOT NULL, "
    "name VARCHAR(32) NOT NULL, amount INT NOT NULL, PRIMARY KEY (gid, name))",
    "pg": f"CREATE TABLE IF NOT EXISTS {BUSI} (gid VARCHAR(128) NOT NULL, "
    "name VARCHAR(32) NOT NULL, amount INT NOT NULL, PRIMARY KEY (gid, name))",
}


def pg_dsn() -> str:
    p = services.postgres()
    return f"host={p.host} port={p.port} user={p.user} password={p.password} dbname=postgres"


def sync_conn(db: str) -> Any:
    """A blocking autocommit connection (checks, hand-made XA statements)."""
    if db == "mysql":
        return pymysql.connect(**services.mysql().kwargs(), autocommit=True)
    return psycopg.connect(pg_dsn(), autocommit=True)


def check(db: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql` (%s placeholders) on a fresh autocommit connection."""
    conn = sync_conn(db)
    try:
        if db == "mysql":
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
                return list(cur.fetchall())
        cur = conn.execute(sql, params or None)
        return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def setup_tables() -> None:
    for db in DBS:
        conn = sync_conn(db)
        try:
            ensure_table_sync(conn, BARRIER)
            if db == "mysql":
                with conn.cursor() as cur:
                    cur.execute(_DDL[db])
            else:
                conn.execute(_DDL[db])
        finally:
            conn.close()


def prepared_xids(db: str, gid: str) -> list[str]:
    """Names of prepared XA transactions of `gid` still waiting for their second phase."""
    if db == "mysql":
        names = [r[3].decode() if isinstance(r[3], bytes) else str(r[3])
                 for r in check(db, "XA RECOVER")]
        return sorted(n for n in names if n.startswith(gid))
    rows = check(db, "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE %s", (gid + "-%",))
    return sorted(r[0] for r in rows)


def busi_rows(db: str, gid: str) -> list[tuple[str, int]]:
    rows = check(db, f"SELECT name, amount FROM {BUSI} WHERE gid = %s", (gid,))
    return sorted((r[0], int(r[1])) for r in rows)


def barrier_reasons(db: str, gid: str) -> dict[str, str]:
    rows = check(db, f"SELECT branch_id, reason FROM {BARRIER} WHERE gid = %s", (gid,))
    return {r[0]: r[1] for r in rows}


@asynccontextmanager
async def _mysql() -> AsyncIterator[Any]:
    conn = await asyncmy.connect(**services.mysql().kwargs(), autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


@asynccontextmanager
async def _pg() -> AsyncIterator[Any]:
    conn = await asyncpg.connect(**services.postgres().kwargs("postgres"))
    try:
        yield conn
    finally:
        await conn.close()


class XaBranches:
    """The XA branch service in its own thread and loop."""

    def __init__(self, dtm: str) -> None:
        self.dtm = dtm
        self.port = free_port()
        self.fail: set[str] = set()
        self.down: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._client: DtmClient | None = None

    def url(self, db: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{db}/{name}"

    def _route(self, db: str, name: str) -> Any:
        assert self._client is not None

        async def busi(conn: Any, payload: Any) -> None:
            if name in self.fail:
                raise Failure(f"{name} switched to fail")
            gid, amount = payload["gid"], payload["amount"]
            if db == "mysql":
                async with conn.cursor() as cur:
                    await cur.execute(
                        f"INSERT INTO {BUSI} (gid, name, amount) VALUES (%s, %s, %s)",
                        (gid, name, amount),
                    )
            else:
                await conn.execute(
                    f"INSERT INTO {BUSI} (gid, name, amount) VALUES ($1, $2, $3)",
                    gid, name, amount,
                )

        inner = xa_handler(self._client, _mysql if db == "mysql" else _pg, busi, table=BARRIER)

        async def handler(request: web.Request) -> web.StreamResponse:
            if name in self.down:
                return web.json_response({"message": "down"}, status=500)
            return await inner(request)

        return handler

    async def _start(self) -> None:
        self._client = DtmClient(self.dtm)
        app = web.Application()
        for db in DBS:
            for name in ("TransOut", "TransIn"):
                app.router.add_post(f"/{db}/{name}", self._route(db, name))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> XaBranches:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
