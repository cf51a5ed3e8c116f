"""`dtmx migrate` on Redis: from the single-slot layout of earlier dtmx versions (every key
under `RedisPrefix`, e.g. `{a}:g:<gid>`, `{a}:cron`) to the partitioned one (`redis_layout`).

Run it with every server stopped. Each transaction is copied with its TTLs into its
partition and indexed there (cron, fin, all), then its old keys are deleted; a run that
stops half-way is simply run again (a transaction still under the old keys is copied again,
over whatever an earlier run wrote). The old indexes go last, then the layout record, which
is what lets servers start. Key-value records stay where they are when the prefix is a hash
tag (`{a}`: the usual case); under an untagged prefix they are renamed into `{prefix}`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dtmx.stores.redis_codec import pairs
from dtmx.stores.redis_store import RedisStore, _ms

_BATCH = 200


async def migrate_layout(store: RedisStore) -> int:
    """Move every transaction of the old layout into partitions; returns how many moved.
    `store` must be built but not opened (this connects it)."""
    await store.connect()
    old = store.layout.prefix
    moved = 0
    while True:
        gids = [g.decode() for g in
                await store._call(old, "ZRANGE", f"{old}:all", 0, _BATCH - 1)]
        if not gids:
            break
        done = await asyncio.gather(*(_move(store, old, gid) for gid in gids))
        moved += sum(done)
    # anything indexed only by cron or fin (the all index was swept) is moved too
    for index in ("cron", "fin"):
        while gids := [g.decode() for g in
                       await store._call(old, "ZRANGE", f"{old}:{index}", 0, _BATCH - 1)]:
            moved += sum(await asyncio.gather(*(_move(store, old, gid) for gid in gids)))
    if not (old.startswith("{") and old.endswith("}")):
        await _move_kv(store, old)
    await store._call(old, "DEL", *(f"{old}:{k}" for k in ("all", "cron", "fin", "seq",
                                                          "sweep")))
    await store.record_layout()
    return moved


async def _move(store: RedisStore, old: str, gid: str) -> int:
    """Copy one transaction into its partition, then drop it from the old layout."""
    og, ob = f"{old}:g:{gid}", f"{old}:b:{gid}"
    raw_g: list[bytes] = await store._call(og, "HGETALL", og)
    moved = 0
    if raw_g:
        raw_b: list[bytes] = await store._call(ob, "HGETALL", ob)
        ttl_g = int(await store._call(og, "PTTL", og))
        ttl_b = int(await store._call(ob, "PTTL", ob))
        cron = await store._call(old, "ZSCORE", f"{old}:cron", gid)
        fin = await store._call(old, "ZSCORE", f"{old}:fin", gid)
        fields = pairs(raw_g)
        p = store.layout.part(gid)
        tag = store.layout.tags[p]
        ng, nb = f"{tag}:g:{gid}", f"{tag}:b:{gid}"
        n = store.layout.partitions
        seq = int(await store._call(tag, "INCR", f"{tag}:seq"))
        created = float(fields.get(b"create_time", b"0"))
        score = _ms(created) * 2048 + n * (seq % (2048 // n)) + p
        writes: list[tuple[Any, ...]] = [("DEL", ng, nb), ("HSET", ng, *raw_g)]
        if raw_b:
            writes.append(("HSET", nb, *raw_b))
        if ttl_g > 0:
            writes.append(("PEXPIRE", ng, ttl_g))
        if raw_b and ttl_b > 0:
            writes.append(("PEXPIRE", nb, ttl_b))
        writes.append(("ZADD", f"{tag}:all", score, gid))
        if cron is not None:
            writes.append(("ZADD", f"{tag}:cron", cron, gid))
        if fin is not None:
            writes.append(("ZADD", f"{tag}:fin", fin, gid))
        for cmd in writes:
            await store._call(tag, *cmd)
        moved = 1
    await store._call(og, "DEL", og, ob)
    for index in ("all", "cron", "fin"):
        await store._call(old, "ZREM", f"{old}:{index}", gid)
    return moved


async def _move_kv(store: RedisStore, old: str) -> None:
    """Rename `<old>:kv*` keys under the store's tag (one node: an untagged prefix never
    worked on a cluster)."""
    meta = store.layout.meta
    cursor = b"0"
    keys: list[bytes] = []
    while True:
        cursor, batch = await store._call(old, "SCAN", cursor, "MATCH", f"{old}:kv*",
                                          "COUNT", 500)
        keys += batch
        if cursor in (b"0", 0):
            break
    for k in keys:
        name = k.decode()
        await store._call(name, "RENAME", name, meta + name[len(old):])
