"""The Redis store's connection side: plain Redis or a Redis Cluster (found out at `open`),
the scripts and how they are run, and the layout record checked at every open.

`RedisStore` (redis_store.py) builds its verbs on this; see there for the whole picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dtmx.errors import ConfigError, StoreError, StoreUnavailable
from dtmx.net.resp import RedisAddress, ReplyError, RespClient
from dtmx.net.resp_cluster import ClusterClient
from dtmx.stores.redis_layout import Layout, LeaseBook

_LUA_DIR = Path(__file__).with_name("redis_lua")
_SCRIPTS_WITH_PRELUDE = ("create", "update", "take", "add_branches", "branches")
_SCRIPTS = (
    *_SCRIPTS_WITH_PRELUDE,
    "claim_due",
    "lease",
    "nodes",
    "reset_next_cron_time",
    "reset_cron_time",
    "scan",
    "expire_finished",
    "kv_create",
    "kv_update",
    "kv_delete",
    "kv_scan",
)
LAYOUT_VERSION = 2


def _load_lua(name: str) -> str:
    body = (_LUA_DIR / f"{name}.lua").read_text()
    if name in _SCRIPTS_WITH_PRELUDE:
        return (_LUA_DIR / "prelude.lua").read_text() + "\n" + body
    return body


# ---- the store ------------------------------------------------------------------------

# Error replies of a Redis that is starting, failing over or not yet a master: an outage
# (retried, one log line each), not a fault of ours.
_TRANSIENT = ("LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY ")


def _translated(e: ReplyError) -> StoreError:
    """The error of ours for an error reply."""
    if str(e).startswith(_TRANSIENT):
        return StoreUnavailable(f"redis unavailable: {e}")
    return StoreError(f"redis error: {e}")


class RedisBase:
    """Connections, scripts and layout of a `RedisStore` (see `dtmx.stores.redis_store`).

    See the module docstring for the layout. One pipelined connection per Redis node by
    default carries all the concurrency: Redis runs one command at a time anyway, and one
    stream makes the largest batches (measured: 2 connections cost ~5% more CPU in the store
    floor, 4 more still). `pool_size` is accepted for the settings' MaxOpenConns and caps
    `connections`. Connecting and logging in give up after `connect_timeout`; a connection
    whose commands get no reply for `reply_timeout` is dropped (its callers get
    StoreUnavailable). A cluster is recognised at `open` (INFO cluster). `node` names this
    server in the partition leases (random unless given).
    """

    def __init__(
        self,
        url: str,
        prefix: str = "{a}",
        finished_ttl: float = 86400.0,
        data_ttl: float = 604800.0,
        pool_size: int = 64,
        connections: int = 1,
        connect_timeout: float = 5.0,
        reply_timeout: float | None = 15.0,
        ca_file: str = "",
        partitions: int = 64,
        node: str = "",
    ) -> None:
        self.roundtrips = 0
        self.layout = Layout(prefix, partitions)
        self._n = partitions
        self.node = node or f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}"
        self._book = LeaseBook(partitions, self.node)
        self._turn = 0
        self._fttl_ms = str(int(finished_ttl * 1000))
        self._dttl_ms = str(int(data_ttl * 1000))
        try:
            self._address = RedisAddress.from_url(url, ca_file=ca_file)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self._opts: dict[str, Any] = dict(
            connections=max(1, min(connections, pool_size)),
            connect_timeout=connect_timeout, reply_timeout=reply_timeout,
        )
        self._client: RespClient | ClusterClient = RespClient(self._address, **self._opts)
        self.cluster = False
        self._bodies = {name: _load_lua(name) for name in _SCRIPTS}
        self._shas = {name: hashlib.sha1(body.encode()).hexdigest()
                      for name, body in self._bodies.items()}

    # ---- plumbing ---------------------------------------------------------------------
    async def _call(self, key: str, *args: Any) -> Any:
        """One counted round trip to the node of `key`, errors translated (never re-sent)."""
        self.roundtrips += 1
        try:
            return await self._client.execute(*args, key=key)
        except ReplyError as e:
            raise _translated(e) from e
        except (ConnectionError, OSError) as e:
            raise StoreUnavailable(f"redis unreachable: {e}") from e

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA the script; if Redis lost it (restart, SCRIPT FLUSH, a new node), load it
        and retry once: a NOSCRIPT reply means nothing ran, so nothing is applied twice."""
        self.roundtrips += 1
        try:
            return await self._client.execute(
                "EVALSHA", self._shas[name], len(keys), *keys, *args, key=keys[0])
        except ReplyError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise _translated(e) from e
        except (ConnectionError, OSError) as e:
            raise StoreUnavailable(f"redis unreachable: {e}") from e
        await self._call(keys[0], "SCRIPT", "LOAD", self._bodies[name])
        return await self._call(keys[0], "EVALSHA", self._shas[name], len(keys), *keys, *args)

    async def _each(self, coros: Sequence[Any]) -> list[Any]:
        """Await per-partition calls together (pipelined: one send per node)."""
        return list(await asyncio.gather(*coros))

    def _g(self, gid: str) -> str:
        return f"{self.layout.tag(gid)}:g:{gid}"

    def _b(self, gid: str) -> str:
        return f"{self.layout.tag(gid)}:b:{gid}"

    def _c(self, gid: str) -> str:
        return f"{self.layout.tag(gid)}:c:{gid}"

    def _keys(self, gid: str) -> list[str]:
        """g, b, cron, fin of the gid's partition."""
        t = self.layout.tag(gid)
        return [f"{t}:g:{gid}", f"{t}:b:{gid}", f"{t}:cron", f"{t}:fin"]

    def _kv(self, cat: str) -> list[str]:
        m = self.layout.meta
        return [f"{m}:kv:{cat}", f"{m}:kvi:{cat}", f"{m}:kvseq"]

    # ---- lifecycle --------------------------------------------------------------------
    async def open(self) -> None:
        """Find out whether this is a cluster, load the scripts on every node (so the first
        EVALSHA of each does not miss), and check or record the layout."""
        await self.connect()
        await self._check_layout()

    async def connect(self) -> None:
        """`open` without the layout check (what `dtmx migrate` starts with)."""
        info = await self._call("", "INFO", "cluster")
        if b"cluster_enabled:1" in info:
            await self._client.close()
            try:
                self._client = ClusterClient(self._address, **self._opts)
            except ValueError as e:
                raise ConfigError(str(e)) from e
            self.cluster = True
        for name, body in self._bodies.items():
            for sha in await self._on_all("SCRIPT", "LOAD", body):
                if sha.decode() != self._shas[name]:  # would make every EVALSHA miss
                    raise StoreError(f"redis: unexpected SHA for script {name}: {sha!r}")

    async def _on_all(self, *args: Any) -> list[Any]:
        self.roundtrips += 1
        try:
            if isinstance(self._client, ClusterClient):
                return await self._client.execute_on_masters(*args)
            return [await self._client.execute(*args)]
        except ReplyError as e:
            raise _translated(e) from e
        except (ConnectionError, OSError) as e:
            raise StoreUnavailable(f"redis unreachable: {e}") from e

    async def record_layout(self) -> None:
        """Write the layout record (first open, or the end of a migration)."""
        meta = f"{self.layout.meta}:layout"
        await self._call(meta, "HSETNX", meta, "partitions", str(self._n))
        await self._call(meta, "HSETNX", meta, "version", str(LAYOUT_VERSION))

    async def _check_layout(self) -> None:
        meta = f"{self.layout.meta}:layout"
        got = await self._call(meta, "HGET", meta, "partitions")
        if got is None:
            old = self.layout.prefix
            legacy = await self._call(old, "EXISTS", f"{old}:all", f"{old}:cron", f"{old}:fin")
            if legacy:
                raise ConfigError(
                    f"redis: transactions under {old!r} are in the single-slot layout of "
                    "earlier dtmx versions; stop the servers and run `dtmx migrate` first"
                )
            await self.record_layout()
            got = await self._call(meta, "HGET", meta, "partitions")
        if int(got) != self._n:
            raise ConfigError(
                f"redis: the store under {self.layout.meta!r} was created with "
                f"{int(got)} partitions, Store.RedisPartitions says {self._n}; "
                "the number of partitions cannot change"
            )

    async def close(self) -> None:
        """Give back the partitions this server holds, so another server takes them over
        at its next poll rather than when the leases end; then close the connections."""
        if self._book.mine:
            lay = self.layout
            nodes = f"{lay.meta}:nodes"
            # best effort within a short bound: a store that is down keeps the leases,
            # which then simply run out
            with contextlib.suppress(StoreError, TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._each([
                        self._run("lease", [lay.key(p, "lease"), lay.key(p, "cron")],
                                  [self.node, "0", "0", "release"])
                        for p in sorted(self._book.mine)
                    ])
                    await self._call(nodes, "ZREM", nodes, self.node)
            self._book.mine.clear()
        await self._client.close()

    async def ping(self) -> None:
        """See `dtmx.stores.base.Store.ping`."""
        await self._on_all("PING")
