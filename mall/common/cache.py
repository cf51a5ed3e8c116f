"""Cache-aside in go-zero's manner: Redis (full mode) or process memory (embedded mode).

`cached()` reads a key; on a miss it loads from the database and stores either the row or,
for a row that does not exist, a short-lived placeholder ("*", go-zero's notFoundPlaceholder),
so a burst of lookups for a missing id reaches the database once per placeholder lifetime.
Writers delete the key after their transaction commits.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from mall.common.config import RedisNode

#: What a miss is cached as (go-zero's notFoundPlaceholder).
NOT_FOUND_PLACEHOLDER = "*"


class Cache(Protocol):
    """The three verbs cache-aside needs."""

    async def get(self, key: str) -> str | None:
        """The cached text, or None."""
        ...

    async def set(self, key: str, value: str, ttl: float) -> None:
        """Store `value` for `ttl` seconds."""
        ...

    async def delete(self, *keys: str) -> None:
        """Forget the keys."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryCache:
    """A per-process dict with expiry (embedded mode: no Redis)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[float, str]] = {}

    async def get(self, key: str) -> str | None:
        """The cached text, or None."""
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._data[key]
            return None
        return hit[1]

    async def set(self, key: str, value: str, ttl: float) -> None:
        """Store `value` for `ttl` seconds."""
        self._data[key] = (time.monotonic() + ttl, value)

    async def delete(self, *keys: str) -> None:
        """Forget the keys."""
        for k in keys:
            self._data.pop(k, None)

    async def close(self) -> None:
        """Nothing to release."""


class RedisCache:
    """redis.asyncio on the first CacheRedis node (go-zero's `Type: node`)."""

    def __init__(self, node: RedisNode) -> None:
        import redis.asyncio as aioredis

        host, _, port = node.Host.partition(":")
        self._redis: Any = aioredis.Redis(
            host=host or "127.0.0.1",
            port=int(port or 6379),
            password=node.Pass or None,
            decode_responses=True,
        )

    async def get(self, key: str) -> str | None:
        """The cached text, or None."""
        value = await self._redis.get(key)
        return None if value is None else str(value)

    async def set(self, key: str, value: str, ttl: float) -> None:
        """Store `value` for `ttl` seconds."""
        await self._redis.set(key, value, px=max(1, int(ttl * 1000)))

    async def delete(self, *keys: str) -> None:
        """Forget the keys."""
        if keys:
            await self._redis.delete(*keys)

    async def close(self) -> None:
        """Close the pool."""
        await self._redis.aclose()


def make_cache(nodes: list[RedisNode]) -> Cache:
    """Redis when CacheRedis names a node, else process memory."""
    return RedisCache(nodes[0]) if nodes else MemoryCache()


class NotFound(Exception):
    """The row does not exist (possibly known from the cached placeholder)."""


async def cached(
    cache: Cache,
    key: str,
    load: Callable[[], Awaitable[dict[str, Any] | None]],
    *,
    expire: float,
    not_found_expire: float,
) -> dict[str, Any]:
    """Cache-aside read of one row as a dict; raises NotFound for a missing row."""
    text = await cache.get(key)
    if text == NOT_FOUND_PLACEHOLDER:
        raise NotFound(key)
    if text is not None:
        value: dict[str, Any] = orjson.loads(text)
        return value
    row = await load()
    if row is None:
        await cache.set(key, NOT_FOUND_PLACEHOLDER, not_found_expire)
        raise NotFound(key)
    # Spread expiry (±5%, as go-zero does) so keys written together do not expire together.
    await cache.set(key, orjson.dumps(row).decode(), expire * random.uniform(0.95, 1.05))
    return row
