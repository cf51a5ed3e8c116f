"""Each server announces itself in the store, so operators see every server sharing it.

A server keeps one record under the kv category `dtmx_servers` (key: its id, value: JSON
with where it listens, its version, when it started and when it last beat) and rewrites it
every `interval` seconds. A record whose last beat is older than `STALE_BEATS` intervals
belongs to a server that stopped or cannot reach the store: it is shown as down, and
forgotten after `FORGET_AFTER` seconds. Records travel through the store's kv verbs only,
so every backend holds them without a schema change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import orjson

from dtmx import __version__
from dtmx.clock import Clock
from dtmx.core.models import KV
from dtmx.errors import DtmxError
from dtmx.stores.base import Store

log = logging.getLogger("dtmx.heartbeat")

SERVERS = "dtmx_servers"
#: A record not rewritten for this many intervals is from a server that is down.
STALE_BEATS = 3
#: A down server's record is deleted by the others after this many seconds.
FORGET_AFTER = 3600.0


class Health(StrEnum):
    """What a server's heartbeat says about it."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """One server as it announces itself (the JSON value of its kv record)."""

    id: str
    host: str
    pid: int
    version: str
    http_port: int
    grpc_port: int
    started: float
    beat: float
    interval: float
    runs_in_flight: int = 0

    def health(self, now: float) -> Health:
        """UP while the last beat is younger than STALE_BEATS intervals."""
        return Health.UP if now - self.beat <= STALE_BEATS * self.interval else Health.DOWN

    def forgotten(self, now: float) -> bool:
        """True once the record is old enough to be deleted."""
        return now - self.beat > max(FORGET_AFTER, STALE_BEATS * self.interval)

    def to_json(self) -> str:
        """The record as the JSON text stored under the server's key."""
        return orjson.dumps(asdict(self)).decode()


def parse_record(kv: KV) -> ServerRecord | None:
    """The record in a kv row, or None if the row holds something else."""
    try:
        data = orjson.loads(kv.v)
        return ServerRecord(**{k: data[k] for k in ServerRecord.__dataclass_fields__ if k in data})
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None


async def list_servers(store: Store, *, limit: int = 1000) -> list[ServerRecord]:
    """Every server record in the store, in key order."""
    out: list[ServerRecord] = []
    position = ""
    while len(out) < limit:
        kvs, position = await store.kv_scan(cat=SERVERS, position=position, limit=100)
        out.extend(r for r in map(parse_record, kvs) if r is not None)
        if not position:
            break
    return out[:limit]


class Heartbeat:
    """Writes this server's record every `interval` seconds until stopped."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        interval: float,
        http_port: int,
        grpc_port: int,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.interval = interval
        self._in_flight = in_flight
        host = socket.gethostname()
        self.id = f"{host}:{os.getpid()}:{os.urandom(3).hex()}"
        self._base: dict[str, Any] = {
            "id": self.id, "host": host, "pid": os.getpid(), "version": __version__,
            "http_port": http_port, "grpc_port": grpc_port, "started": clock.now(),
        }
        self._version: int | None = None
        self._task: asyncio.Task[None] | None = None

    def record(self) -> ServerRecord:
        """This server's record as of now."""
        runs = self._in_flight() if self._in_flight else 0
        return ServerRecord(
            **self._base, beat=self.clock.now(), interval=self.interval, runs_in_flight=runs
        )

    async def beat(self) -> None:
        """Write the record once (create it, or compare-and-set our own row)."""
        value = self.record().to_json()
        now = self.clock.now()
        if self._version is not None and await self.store.kv_update(
            cat=SERVERS, key=self.id, value=value, expect_version=self._version, now=now
        ):
            self._version += 1
            return
        # first beat, or the row was deleted (forgotten while we could not reach the store)
        kv = await self.store.kv_find(cat=SERVERS, key=self.id)
        if kv is None:
            if await self.store.kv_create(cat=SERVERS, key=self.id, value=value, now=now):
                self._version = 1
            return
        if await self.store.kv_update(
            cat=SERVERS, key=self.id, value=value, expect_version=kv.version, now=now
        ):
            self._version = kv.version + 1

    async def forget_down(self) -> int:
        """Delete the records of servers down for longer than FORGET_AFTER."""
        now = self.clock.now()
        gone = [r for r in await list_servers(self.store) if r.forgotten(now)]
        for r in gone:
            await self.store.kv_delete(cat=SERVERS, key=r.id)
        return len(gone)

    async def run(self) -> None:
        """Write the record every interval (and forget long-gone servers every 100 beats) until
        cancelled; a failed write is logged.
        """
        beats = 0
        while True:
            try:
                await self.beat()
                if beats % 100 == 0:
                    await self.forget_down()
            except DtmxError as e:  # the store is down: others will see this server as down
                log.warning("heartbeat not written: %s", e.message)
            beats += 1
            await self.clock.sleep(self.interval)

    def start(self) -> None:
        """Run `run` as a background task."""
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        """Stop beating and remove the record: a server that stops cleanly is not 'down'."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(DtmxError):
            await self.store.kv_delete(cat=SERVERS, key=self.id)
