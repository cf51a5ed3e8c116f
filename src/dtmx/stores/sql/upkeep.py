"""The SQL stores' verbs off the processing path: the poller-lag read, the operators'
cron reset, the transaction list, expiry of finished transactions. Same SQL everywhere."""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from typing import Any

from dtmx.core.models import UNFINISHED, ScanFilter, Status, Transaction
from dtmx.stores.sql.conn import Executor, Tx
from dtmx.stores.sql.dialect import Dialect
from dtmx.stores.sql.rows import TRANS_COLS, parse_position, placeholders, trans_from_row

UNFINISHED_VALUES = [s.value for s in UNFINISHED]
_FINISHED = [Status.SUCCEED.value, Status.FAILED.value]
#: A WHERE condition on UNFINISHED_VALUES.
IN_UNFINISHED = f"status IN ({placeholders(len(UNFINISHED_VALUES))})"
#: Rows deleted per transaction by expire_finished.
EXPIRE_BATCH = 500


class SqlUpkeep:
    """`dtmx.stores.base.Store`'s oldest_due, reset_cron_time, scan and expire_finished for
    the SQL stores (SqlStore provides the sessions and the dialect)."""

    _d: Dialect

    def _session(self) -> AbstractAsyncContextManager[Executor]:
        raise NotImplementedError

    def _tx(self) -> AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    async def oldest_due(self, *, now: float) -> float | None:
        """See `dtmx.stores.base.Store.oldest_due`."""
        async with self._session() as ex:
            rows = await ex.fetch(
                f"SELECT MIN(next_cron_time) FROM trans_global"
                f" WHERE {IN_UNFINISHED} AND next_cron_time <= ?",
                [*UNFINISHED_VALUES, self._d.ts(now)],
            )
        return self._d.from_ts(rows[0][0]) if rows and rows[0][0] is not None else None

    async def reset_cron_time(self, *, now: float, after: float, limit: int) -> tuple[int, bool]:
        """See `dtmx.stores.base.Store.reset_cron_time`."""
        d = self._d
        cond = f"{IN_UNFINISHED} AND next_cron_time > ?"
        cond_args = [*UNFINISHED_VALUES, d.ts(now + after)]
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
        """See `dtmx.stores.base.Store.scan`; the position is the last row id shown."""
        d = self._d
        where: list[str] = ["id < ?"]
        args: list[Any] = [parse_position(position)]
        for cond, value in (
            ("status = ?", filters.status and filters.status.value),
            ("trans_type = ?", filters.trans_type and filters.trans_type.value),
            ("create_time >= ?", d.ts(filters.create_time_start)),
            ("create_time <= ?", d.ts(filters.create_time_end)),
        ):
            if value is not None:
                where.append(cond)
                args.append(value)
        if filters.gid_prefix:
            # '!' escapes: a backslash means different things in MySQL and PostgreSQL literals
            where.append("gid LIKE ? ESCAPE '!'")
            args.append(re.sub(r"([!%_])", r"!\1", filters.gid_prefix) + "%")
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
        """See `dtmx.stores.base.Store.expire_finished`; deletes in batches."""
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
                    f"DELETE FROM trans_call WHERE gid IN ({placeholders(len(gids))})", gids
                )
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
