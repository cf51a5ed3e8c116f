"""MysqlStore: the SQL store in MySQL/MariaDB (10.6+); connection set-up in `mysql_driver`.

The multi-row verbs are each one transaction sent as one multi-statement script (one
round trip, `MysqlBackend.script`). MySQL has no UPDATE ... RETURNING and no
data-modifying CTEs, so the statements after a compare-and-set UPDATE are gated on it
through a session variable: with CLIENT_FOUND_ROWS, ROW_COUNT() counts the rows the
UPDATE matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from ssl import SSLContext
from typing import Any

from dtmx.core.models import Branch, Change, Status, Transaction, TransType
from dtmx.stores.op_writes import op_writes
from dtmx.stores.sql.calls import (
    INSERT_CALL,
    INSERT_CALL_AT,
    TRIM_CALLS,
    TRIM_CALLS_BELOW,
    insert_call_args,
    insert_call_at_args,
    trim_below_args,
    trim_calls_args,
    update_branch,
)
from dtmx.stores.sql.conn import Row, Statement, UniqueViolation
from dtmx.stores.sql.mysql_driver import MysqlBackend
from dtmx.stores.sql.rows import (
    BRANCH_COLS,
    BRANCH_INSERT_COLS,
    INSERT_TRANS,
    TRANS_COLS,
    UPDATE_BRANCH,
    CasUpdate,
    branch_params,
    cas_update,
    placeholders,
    trans_params,
)
from dtmx.stores.sql.store import BELOW_ROOM, NewBranches, NewTrans, SqlStore
from dtmx.stores.sql.upkeep import UNFINISHED_VALUES

_REMEMBER_MATCHED: Statement = ("SET @dtmx_matched = ROW_COUNT()", ())
_IF_MATCHED = "@dtmx_matched > 0"
#: Branch rows per multi-row INSERT (10 parameters each; well under any limit).
_INSERT_CHUNK = 500
#: UPDATE_BRANCH, applied only if the compare-and-set before it matched.
_UPDATE_BRANCH_IF_MATCHED = f"{UPDATE_BRANCH} AND {_IF_MATCHED}"
#: A call and the trim after it, only if the compare-and-set before matched.
_INSERT_CALL_IF_MATCHED = f"{INSERT_CALL} FROM DUAL WHERE {_IF_MATCHED}"
_TRIM_CALLS_IF_MATCHED = f"{TRIM_CALLS} AND {_IF_MATCHED}"
_INSERT_CALL_AT_IF_MATCHED = f"{INSERT_CALL_AT} FROM DUAL WHERE {_IF_MATCHED}"
_TRIM_BELOW_IF_MATCHED = f"{TRIM_CALLS_BELOW} AND {_IF_MATCHED}"
#: `take` reads back the row and its branches if the compare-and-set matched (args: gid).
_TAKE_TRANS = f"SELECT {TRANS_COLS} FROM trans_global WHERE gid = ? AND {_IF_MATCHED}"
_TAKE_BRANCHES = (
    f"SELECT {BRANCH_COLS} FROM trans_branch_op WHERE gid = ? AND {_IF_MATCHED} ORDER BY id"
)
#: A no-op UPDATE takes the global row's lock and counts the match (SELECT ... INTO
#: placement differs between MySQL and MariaDB). Args: gid, status, trans_type or None,
#: gid, room (see BELOW_ROOM).
_LOCK_GLOBAL = (
    "UPDATE trans_global SET update_time = update_time WHERE gid = ? AND status = ?"
    f" AND trans_type = COALESCE(?, trans_type) AND {BELOW_ROOM}"
)


def _insert_branches(rows: Sequence[Sequence[Any]], *, if_matched: bool = False
                     ) -> list[Statement]:
    """Multi-row INSERTs of branch rows; with `if_matched`, only if the compare-and-set
    before matched."""
    out: list[Statement] = []
    for i in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[i:i + _INSERT_CHUNK]
        if if_matched:
            one = f"SELECT {placeholders(10)} FROM DUAL WHERE {_IF_MATCHED}"
            values = " UNION ALL ".join([one] * len(chunk))
        else:
            values = "VALUES " + ", ".join([f"({placeholders(10)})"] * len(chunk))
        out.append((f"INSERT INTO trans_branch_op ({BRANCH_INSERT_COLS}) {values}",
                    [v for r in chunk for v in r]))
    return out


class MysqlStore(SqlStore):
    """A store in MySQL/MariaDB database `db` (created if missing, with `create`)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 3306,
        user: str = "root",
        password: str = "",
        db: str = "dtm",
        *,
        pool_size: int = 10,
        create: bool = True,
        ssl: SSLContext | None = None,
        batch_lanes: int = 0,
    ) -> None:
        backend = MysqlBackend(
            host=host, port=port, user=user, password=password, db=db, pool_size=pool_size,
            ssl=ssl,
        )
        super().__init__(backend, create=create, batch_lanes=batch_lanes)
        self._my = backend

    async def _script(self, statements: Sequence[Statement]) -> list[tuple[int, list[Row]]]:
        self.roundtrips += 1
        return await self._my.script(statements)

    async def _create_with_branches(self, trans: Transaction, branches: Sequence[Branch]
                                    ) -> bool:
        d = self._d
        try:
            await self._script([
                (INSERT_TRANS, trans_params(trans, d)),
                *_insert_branches([branch_params(b, d) for b in branches]),
            ])
        except UniqueViolation as e:
            if e.statement == 0:  # the gid exists
                return False
            raise
        return True

    async def _create_many(self, items: Sequence[NewTrans]) -> list[bool]:
        """One script: each transaction's rows in turn. An existing gid fails the script
        (UniqueViolation), and then each create is redone alone, answering for itself."""
        d = self._d
        script: list[Statement] = []
        for trans, branches in items:
            script.append((INSERT_TRANS, trans_params(trans, d)))
            script += _insert_branches([branch_params(b, d) for b in branches])
        await self._script(script)
        return [True] * len(items)

    def _cas_script(self, cas: Statement, gid: str, now: float, change: Change
                    ) -> list[Statement]:
        """The compare-and-set UPDATE, then the branch updates and calls only if it
        matched."""
        d = self._d
        if not change.branches and not change.calls:
            return [cas]
        out: list[Statement] = [cas, _REMEMBER_MATCHED]
        if not change.calls:
            out += [(_UPDATE_BRANCH_IF_MATCHED,
                     [b.status.value, d.ts(now), d.ts(now) if b.status.finished else None,
                      gid, b.branch_id, b.op.value])
                    for b in change.branches]
            return out
        ops, history = op_writes(change)
        for w in ops:
            sql, args = update_branch(gid, now, w, d)
            out.append((f"{sql} AND {_IF_MATCHED}", args))
        keep = change.keep_calls
        for c in history:
            if c.attempt:
                out.append((_INSERT_CALL_AT_IF_MATCHED, insert_call_at_args(gid, c, d)))
                if c.attempt > keep:
                    out.append((_TRIM_BELOW_IF_MATCHED, trim_below_args(gid, c, keep)))
                continue
            out += [(_INSERT_CALL_IF_MATCHED, insert_call_args(gid, c, d)),
                    (_TRIM_CALLS_IF_MATCHED, trim_calls_args(gid, c, keep))]
        return out

    async def _update_with_rows(self, cas: tuple[str, list[Any]], gid: str, now: float,
                                change: Change) -> bool:
        # statement 0's row count says whether the compare-and-set matched
        return (await self._script(self._cas_script(cas, gid, now, change)))[0][0] > 0

    async def _update_many(self, items: Sequence[CasUpdate]) -> list[bool]:
        """One script, one transaction: each update's statements in turn, each
        compare-and-set's row count its own outcome."""
        script: list[Statement] = []
        at: list[int] = []
        for u in items:
            cas = cas_update(self._d, u.gid, u.now, u.expect_status, u.expect_owner, u.change,
                             u.expect_type)
            at.append(len(script))
            script += self._cas_script(cas, u.gid, u.now, u.change)
        results = await self._script(script)
        return [results[i][0] > 0 for i in at]

    async def _take(self, cas: tuple[str, list[Any]], gid: str
                    ) -> tuple[list[Row], list[Row]] | None:
        results = await self._script(
            [cas, _REMEMBER_MATCHED, (_TAKE_TRANS, [gid]), (_TAKE_BRANCHES, [gid])]
        )
        trows, brows = results[2][1], results[3][1]
        return (trows, brows) if trows else None

    async def _add_branches(self, gid: str, now: float, branches: Sequence[Branch],
                            expect_status: Status, expect_type: TransType | None,
                            room: int) -> bool:
        rows = [branch_params(b, self._d, now) for b in branches]
        results = await self._script([
            (_LOCK_GLOBAL,
             [gid, expect_status.value, expect_type and expect_type.value, gid, room]),
            _REMEMBER_MATCHED,
            *_insert_branches(rows, if_matched=True),
        ])
        return results[0][0] > 0

    async def _add_many(self, items: Sequence[NewBranches]) -> list[bool]:
        """One script: each item's lock and inserts in turn (a duplicate fails the script,
        UniqueViolation, and then each is redone alone)."""
        script: list[Statement] = []
        locks: list[int] = []
        for a in items:
            locks.append(len(script))
            script += [
                (_LOCK_GLOBAL, [a.gid, a.expect_status.value,
                                a.expect_type and a.expect_type.value, a.gid, a.room]),
                _REMEMBER_MATCHED,
                *_insert_branches([branch_params(b, self._d, a.now) for b in a.branches],
                                  if_matched=True),
            ]
        results = await self._script(script)
        return [results[i][0] > 0 for i in locks]

    def _claim_pick(self, now: float, limit: int) -> tuple[str, list[Any]]:
        """The due rows to claim, one index range per unfinished status.

        As one `status IN (...) ORDER BY next_cron_time` query, InnoDB would sort by a
        filesort after locking every due row it read, so one claimer would hold them all
        and the others, skipping locked rows, would find none. Each status's range of the
        (status, next_cron_time) index is read in order and stops after `limit` rows, so a
        claim locks at most `limit` rows per status and concurrent claimers divide the
        rest."""
        parts = " UNION ALL ".join(
            ["(SELECT id, next_cron_time FROM trans_global WHERE status = ?"
             " AND next_cron_time <= ? ORDER BY next_cron_time LIMIT ?"
             f"{self._d.skip_locked})"] * len(UNFINISHED_VALUES))
        args: list[Any] = []
        for status in UNFINISHED_VALUES:
            args += [status, self._d.ts(now), limit]
        return (f"SELECT id FROM ({parts}) AS due ORDER BY next_cron_time LIMIT ?",
                [*args, limit])

    async def claim_due(
        self, *, now: float, lease: float, owner: str, limit: int
    ) -> list[Transaction]:
        """See `dtmx.stores.base.Store.claim_due`. Three statements in one transaction:
        MySQL cannot UPDATE a table it selects from with LIMIT."""
        async with self._tx() as tx:
            ids = [r[0] for r in await tx.fetch(*self._claim_pick(now, limit))]
            if not ids:
                return []
            in_ids = f"id IN ({placeholders(len(ids))})"
            await tx.execute(
                f"UPDATE trans_global SET owner = ?, next_cron_time = ? WHERE {in_ids}",
                [owner, self._d.ts(now + lease), *ids],
            )
            rows = await tx.fetch(f"SELECT {TRANS_COLS} FROM trans_global WHERE {in_ids}", ids)
        return self._claimed(rows)
