"""The key-value verbs of the SQL stores (`kv` table: topics, server heartbeats)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from dtmx.core.models import KV
from dtmx.stores.sql.conn import Executor, UniqueViolation
from dtmx.stores.sql.dialect import Dialect
from dtmx.stores.sql.rows import KV_COLS, kv_from_row, parse_position


class SqlKv:
    """`dtmx.stores.base.Store`'s key-value verbs, shared by the SQL stores (SqlStore
    provides the session and the dialect)."""

    _d: Dialect

    def _session(self) -> AbstractAsyncContextManager[Executor]:
        raise NotImplementedError

    async def kv_find(self, *, cat: str, key: str) -> KV | None:
        """See `dtmx.stores.base.Store.kv_find`."""
        async with self._session() as ex:
            rows = await ex.fetch(f"SELECT {KV_COLS} FROM kv WHERE cat = ? AND k = ?", [cat, key])
        return kv_from_row(rows[0], self._d) if rows else None

    async def kv_scan(self, *, cat: str, position: str, limit: int) -> tuple[list[KV], str]:
        """See `dtmx.stores.base.Store.kv_scan`; newest first."""
        async with self._session() as ex:
            rows = await ex.fetch(
                f"SELECT {KV_COLS} FROM kv WHERE cat = ? AND id < ? ORDER BY id DESC LIMIT ?",
                [cat, parse_position(position), limit + 1],
            )
        page = rows[:limit]
        nxt = str(page[-1][0]) if len(rows) > limit and page else ""
        return [kv_from_row(r, self._d) for r in page], nxt

    async def kv_create(self, *, cat: str, key: str, value: str, now: float) -> bool:
        """See `dtmx.stores.base.Store.kv_create`."""
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
        """See `dtmx.stores.base.Store.kv_update`."""
        async with self._session() as ex:
            n = await ex.execute(
                "UPDATE kv SET v = ?, version = version + 1, update_time = ?"
                " WHERE cat = ? AND k = ? AND version = ?",
                [value, self._d.ts(now), cat, key, expect_version],
            )
        return n > 0

    async def kv_delete(self, *, cat: str, key: str) -> bool:
        """See `dtmx.stores.base.Store.kv_delete`."""
        async with self._session() as ex:
            n = await ex.execute("DELETE FROM kv WHERE cat = ? AND k = ?", [cat, key])
        return n > 0
