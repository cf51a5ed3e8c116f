"""The Redis store on a 3-master Redis Cluster started by the test session: transactions
spread over every master, and the client follows ASK and MOVED while a slot migrates."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dtmx.core.models import Change, ScanFilter, Status, Transaction, TransType
from dtmx.errors import StoreUnavailable
from dtmx.net.resp_cluster import key_slot
from dtmx.stores.redis_store import RedisStore
from tests.support.redis_cluster import RedisCluster
from tests.support.tls import _leaf as make_leaf
from tests.support.tls import make_certs

T0 = 1_700_000_000.0


def _trans(gid: str) -> Transaction:
    return Transaction(gid=gid, trans_type=TransType.SAGA, status=Status.SUBMITTED,
                       create_time=T0, update_time=T0, next_cron_time=T0 + 10,
                       next_cron_interval=10.0)


@pytest.fixture
async def store(redis_cluster: RedisCluster) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_cluster.url, prefix="{dtmx-rc-" + uuid.uuid4().hex[:10] + "}")
    await s.open()
    yield s
    await s.close()


async def test_transactions_spread_over_every_master(redis_cluster: RedisCluster,
                                                     store: RedisStore) -> None:
    assert store.cluster
    gids = [f"spread-{i}-{uuid.uuid4().hex[:6]}" for i in range(1000)]
    for i in range(0, 1000, 100):
        assert all(await asyncio.gather(*(store.create(trans=_trans(g), branches=[])
                                          for g in gids[i:i + 100])))
    per_master: dict[int, int] = {}
    owners = redis_cluster.slot_owners()
    for g in gids:
        port = owners[key_slot(f"{store.layout.tag(g)}:g:{g}")]
        per_master[port] = per_master.get(port, 0) + 1
    assert sorted(per_master) == sorted(redis_cluster.ports)
    assert min(per_master.values()) >= 150, per_master  # no master left nearly idle
    got = await asyncio.gather(*(store.get(gid=g) for g in gids[::50]))
    assert [t.gid for t in got if t] == gids[::50]
    page, _ = await store.scan(position="", limit=1000,
                               filters=ScanFilter(gid_prefix="spread-"))
    assert len(page) == 1000


async def test_ask_and_moved_while_a_slot_migrates(redis_cluster: RedisCluster,
                                                   store: RedisStore) -> None:
    g = "mig-" + uuid.uuid4().hex
    assert await store.create(trans=_trans(g), branches=[])
    gkey = f"{store.layout.tag(g)}:g:{g}"
    slot = int(redis_cluster._cli(redis_cluster.ports[0], "cluster", "keyslot", gkey))
    src = redis_cluster.master_of_key(gkey)
    dst = next(p for p in redis_cluster.ports if p != src)
    src_id = redis_cluster._cli(src, "cluster", "myid")
    dst_id = redis_cluster._cli(dst, "cluster", "myid")
    cli = redis_cluster._cli
    assert cli(dst, "cluster", "setslot", str(slot), "importing", src_id) == "OK"
    assert cli(src, "cluster", "setslot", str(slot), "migrating", dst_id) == "OK"
    try:
        # only the transaction's hash moves for now: reading it is answered with ASK
        assert cli(src, "migrate", "127.0.0.1", str(dst), gkey, "0", "5000") == "OK"
        got = await store.get(gid=g)
        assert got is not None and got.gid == g
    finally:
        for k in cli(src, "cluster", "getkeysinslot", str(slot), "1000").split():
            cli(src, "migrate", "127.0.0.1", str(dst), k, "0", "5000")
        for p in redis_cluster.ports:
            cli(p, "cluster", "setslot", str(slot), "node", dst_id)
    # the slot is the other master's now: the old one answers MOVED, the map is refreshed
    assert (await store.get(gid=g)) is not None
    assert await store.update(gid=g, now=T0 + 1, expect_status=Status.SUBMITTED,
                              expect_owner=None, change=Change(status=Status.SUCCEED))
    assert redis_cluster.master_of_key(gkey) == dst


async def test_cluster_over_tls_with_an_acl_user(tmp_path: Path) -> None:
    """rediss:// and AUTH user password on every node the slot map names."""
    certs = make_certs(tmp_path / "certs")
    # the cluster bus is mutual TLS: a node's certificate serves both ends
    make_leaf(certs.ca.parent, "node", "subjectAltName=IP:127.0.0.1\n"
              "extendedKeyUsage=serverAuth,clientAuth\n")
    d = certs.ca.parent
    (d / "node.key").chmod(0o644)
    cluster = RedisCluster(3, password="admin-pw", tls=(certs.ca, d / "node.pem", d / "node.key"))
    try:
        cluster.start()
        for port in cluster.ports:
            assert cluster._cli(port, "acl", "setuser", "dtmx", "on", ">dtmx-pw", "~*", "&*",
                                "+@all") == "OK"
        url = f"rediss://dtmx:dtmx-pw@127.0.0.1:{cluster.ports[1]}/0"
        s = RedisStore(url, prefix="{tls}", ca_file=str(certs.ca))
        await s.open()
        try:
            assert s.cluster
            gids = [f"tls-{i}" for i in range(60)]
            assert all(await asyncio.gather(*(s.create(trans=_trans(g), branches=[])
                                              for g in gids)))
            owners = cluster.slot_owners()
            assert {owners[key_slot(s.layout.tag(g))] for g in gids} == set(cluster.ports)
            claimed = await s.claim_due(now=T0 + 10, lease=30, owner="o", limit=100)
            assert sorted(t.gid for t in claimed) == sorted(gids)
        finally:
            await s.close()
        wrong = RedisStore(f"rediss://dtmx:nope@127.0.0.1:{cluster.ports[0]}/0",
                           prefix="{tls}", ca_file=str(certs.ca))
        with pytest.raises(StoreUnavailable, match="refused the login"):
            await wrong.open()
        await wrong.close()
    finally:
        cluster.stop()
