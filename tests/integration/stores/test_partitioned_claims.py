"""Several servers polling one SQL database divide the due rows (issue 17).

Each "server" is a store of its own (its own connection pool) on one database of ours
(`dtmx_test_claims`). claim_due picks rows with FOR UPDATE SKIP LOCKED: claimers never
wait for each other's rows and never claim one twice; a dead claimer's rows come back
when its lease ends. The process-level version (three `dtmx serve`, one killed) is
tests/integration/core/test_multi_server.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dtmx.stores.sql import SqlStore
from dtmx.stores.sql.mysql import MysqlStore
from dtmx.stores.sql.postgres import PostgresStore

from .conftest import empty_tables, open_current
from .test_contract import T0, gid, mk

DB = "dtmx_test_claims"
LEASE = 30.0


def _one(kind: str) -> SqlStore:
    if kind == "mysql":
        return MysqlStore("127.0.0.1", 3306, "root", "", DB, pool_size=2)
    return PostgresStore("127.0.0.1", 5432, "postgres", "", "postgres", DB, pool_size=2)


@pytest.fixture(params=["mysql", "postgres"])
async def servers(request: pytest.FixtureRequest) -> AsyncIterator[list[SqlStore]]:
    stores = [_one(request.param) for _ in range(3)]
    for s in stores:
        await open_current(s)
    try:
        await empty_tables(stores[0])
        yield stores
    finally:
        for s in stores:
            await s.close()


async def test_three_servers_divide_the_due_rows(servers: list[SqlStore]) -> None:
    gids = {gid() for _ in range(150)}
    for g in gids:
        assert await servers[0].create(trans=mk(g, next_cron=T0 - 1), branches=[])

    async def poll(i: int) -> list[str]:
        mine: list[str] = []
        while batch := await servers[i].claim_due(now=T0, lease=LEASE, owner=f"s{i}",
                                                  limit=5):
            mine += [t.gid for t in batch]
            await asyncio.sleep(0)  # a poller runs its batch before the next claim
        return mine

    got = await asyncio.gather(*(poll(i) for i in range(3)))
    claimed = [g for mine in got for g in mine]
    assert len(claimed) == len(set(claimed)) == len(gids)  # all of them, none twice
    assert set(claimed) == gids
    assert all(mine for mine in got), [len(m) for m in got]  # the work was divided
    for i, mine in enumerate(got):
        for g in mine[:3]:
            t = await servers[0].get(gid=g)
            assert t is not None and t.owner == f"s{i}"


async def test_a_claimer_skips_rows_another_holds(servers: list[SqlStore]) -> None:
    a, b = servers[0], servers[1]
    gids = [gid() for _ in range(6)]
    for i, g in enumerate(gids):
        assert await a.create(trans=mk(g, next_cron=T0 - 10 + i), branches=[])
    # server a is in the middle of a claim: the three most overdue rows are locked
    async with a.backend.transaction() as tx:
        held = await tx.fetch(
            "SELECT gid FROM trans_global WHERE gid IN (?, ?, ?) FOR UPDATE", gids[:3])
        assert sorted(r[0] for r in held) == sorted(gids[:3])
        # b neither waits for them nor takes them
        got = await asyncio.wait_for(
            b.claim_due(now=T0, lease=LEASE, owner="b", limit=10), timeout=5)
        assert sorted(t.gid for t in got) == sorted(gids[3:])


async def test_a_dead_servers_rows_are_taken_over_after_its_lease(
        servers: list[SqlStore]) -> None:
    gids = {gid() for _ in range(10)}
    for g in gids:
        assert await servers[0].create(trans=mk(g, next_cron=T0 - 1), branches=[])
    dead = await servers[0].claim_due(now=T0, lease=LEASE, owner="dead", limit=10)
    assert {t.gid for t in dead} == gids
    await servers[0].close()  # it never writes again
    # the others see nothing due while its lease runs
    assert await servers[1].claim_due(now=T0 + LEASE - 1, lease=LEASE, owner="s1",
                                      limit=10) == []
    first = await servers[1].claim_due(now=T0 + LEASE, lease=LEASE, owner="s1", limit=6)
    rest = await servers[2].claim_due(now=T0 + LEASE, lease=LEASE, owner="s2", limit=6)
    assert len(first) == 6 and len(rest) == 4
    assert {t.gid for t in first} | {t.gid for t in rest} == gids
