"""A local ledger in SQLite for workflow steps: balances changed under the barrier, so a
step re-run after a crash (or a rollback without its action) changes nothing twice."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from dtmx.client import BranchBarrier
from dtmx.client.barrier import ensure_table

TABLE = "barrier"


class Ledger:
    """Accounts 1 and 2, starting at 100 each, and account 3 (a counter) at 0."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)

    async def setup(self) -> Ledger:
        async with aiosqlite.connect(self.path) as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY, balance INTEGER)"
            )
            await conn.execute("INSERT OR REPLACE INTO account VALUES (1, 100), (2, 100), (3, 0)")
            await conn.commit()
            await ensure_table(conn, TABLE)
        return self

    async def adjust(self, bb: BranchBarrier, account: int, amount: int) -> None:
        """Add `amount` to `account` at most once for this branch op."""
        bb.table = TABLE
        async with aiosqlite.connect(self.path) as conn:

            async def busi(c: aiosqlite.Connection) -> None:
                await c.execute(
                    "UPDATE account SET balance = balance + ? WHERE id = ?", (amount, account)
                )

            await bb.call(conn, busi)

    async def balances(self) -> tuple[int, int]:
        """Accounts 1 and 2."""
        async with aiosqlite.connect(self.path) as conn:
            rows = await (await conn.execute("SELECT balance FROM account ORDER BY id")).fetchall()
        return int(rows[0][0]), int(rows[1][0])

    async def counter(self) -> int:
        """Account 3."""
        async with aiosqlite.connect(self.path) as conn:
            rows = await (await conn.execute("SELECT balance FROM account WHERE id = 3")).fetchall()
        return int(rows[0][0])

    async def barrier_rows(self, gid: str) -> list[tuple[str, str]]:
        async with aiosqlite.connect(self.path) as conn:
            cur = await conn.execute(
                f"SELECT branch_id, op FROM {TABLE} WHERE gid = ? ORDER BY id", (gid,)
            )
            return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]
