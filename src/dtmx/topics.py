"""Msg topics: each topic is one KV entry (category `topics`) holding its subscribers as a
JSON list of {"url", "remark"}, as DTM stores them. Changes are compare-and-set on the
entry's version, retried a few times."""

from __future__ import annotations

import orjson

from dtmx.core.models import KV
from dtmx.errors import Failure, NotFound
from dtmx.stores.base import Store

TOPICS = "topics"
_ATTEMPTS = 5


def _subs(kv: KV | None) -> list[dict[str, str]]:
    if kv is None:
        return []
    try:
        subs = orjson.loads(kv.v)
    except orjson.JSONDecodeError:
        return []
    return [s for s in subs if isinstance(s, dict) and isinstance(s.get("url"), str)]


async def subscribers(store: Store, topics: list[str]) -> dict[str, list[str]]:
    """The subscriber URLs of each topic (an unknown topic has none)."""
    out: dict[str, list[str]] = {}
    for name in topics:
        kv = await store.kv_find(cat=TOPICS, key=name)
        out[name] = [s["url"] for s in _subs(kv)]
    return out


async def subscribe(store: Store, *, topic: str, url: str, remark: str, now: float) -> None:
    """Add `url` to `topic`'s subscribers (creating the topic); Failure if it is there."""
    for _ in range(_ATTEMPTS):
        kv = await store.kv_find(cat=TOPICS, key=topic)
        if kv is None:
            value = orjson.dumps([{"url": url, "remark": remark}]).decode()
            if await store.kv_create(cat=TOPICS, key=topic, value=value, now=now):
                return
            continue
        subs = _subs(kv)
        if any(s["url"] == url for s in subs):
            raise Failure(f"{url} already subscribes to {topic}")
        subs.append({"url": url, "remark": remark})
        if await store.kv_update(
            cat=TOPICS, key=topic, value=orjson.dumps(subs).decode(),
            expect_version=kv.version, now=now,
        ):
            return
    raise Failure(f"topic {topic} kept changing; retry")


async def unsubscribe(store: Store, *, topic: str, url: str, now: float) -> None:
    """Remove `url` from `topic`'s subscribers; NotFound if either is unknown."""
    for _ in range(_ATTEMPTS):
        kv = await store.kv_find(cat=TOPICS, key=topic)
        if kv is None:
            raise NotFound(f"no such topic: {topic}")
        subs = _subs(kv)
        rest = [s for s in subs if s["url"] != url]
        if len(rest) == len(subs):
            raise NotFound(f"{url} does not subscribe to {topic}")
        if await store.kv_update(
            cat=TOPICS, key=topic, value=orjson.dumps(rest).decode(),
            expect_version=kv.version, now=now,
        ):
            return
    raise Failure(f"topic {topic} kept changing; retry")
