"""Redis Cluster on top of our pipelined RESP client: slot routing and redirects.

Every command names the key that routes it (`execute(..., key=k)`): its hash slot (CRC16 of
the key, or of its `{hash tag}`, modulo 16384) picks the master from the slot map, and that
master's `RespClient` pipelines it like any other command. The map comes from
`CLUSTER SLOTS`, asked of any node we know (the seed first).

Redirects, as the cluster specification says:
- `MOVED slot host:port`: the slot lives elsewhere for good. Nothing ran, so the command is
  sent again to that node, and the map is refreshed (once, however many commands saw it).
- `ASK slot host:port`: the slot is being migrated and this key already moved. The command
  goes once to that node preceded by `ASKING` on the same connection (both in one send);
  the map is left as it is.
- `TRYAGAIN` (a multi-key command during a migration): nothing ran; retried after a pause.
A lost connection is not retried (the command may have run) but marks the map stale, so
the next command asks the cluster again (a failover moved the slots to a replica).
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import replace
from typing import Any

from dtmx.net.resp import Arg, RedisAddress, ReplyError, RespClient

SLOTS = 16384
_MAX_REDIRECTS = 5


def _crc16_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


def key_slot(key: str | bytes) -> int:
    """The hash slot of `key`: only the part inside the first non-empty `{...}` counts."""
    if isinstance(key, str):
        start = key.find("{")
        if start >= 0:
            end = key.find("}", start + 1)
            if end > start + 1:
                return _tag_slot(key[start + 1:end])
        return crc16(key.encode()) % SLOTS
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return crc16(key[start + 1:end]) % SLOTS
    return crc16(key) % SLOTS


@functools.lru_cache(maxsize=4096)
def _tag_slot(tag: str) -> int:
    # the store's keys carry one of a few partition tags: hash each once (CRC16 in Python
    # costs microseconds per key, on every command)
    return crc16(tag.encode()) % SLOTS


def _redirect(e: ReplyError) -> tuple[str, int, str] | None:
    """(kind, slot, "host:port") of a MOVED/ASK error reply, else None."""
    parts = str(e).split()
    if len(parts) == 3 and parts[0] in ("MOVED", "ASK"):
        return parts[0], int(parts[1]), parts[2]
    return None


class ClusterClient:
    """A Redis Cluster client: one `RespClient` per master, commands routed by key slot.

    `seed` gives the first node and everything shared by all nodes (TLS, CA, user,
    password); node addresses come from the cluster. Options are `RespClient`'s, per node.
    """

    def __init__(
        self,
        seed: RedisAddress,
        *,
        connections: int = 1,
        connect_timeout: float = 5.0,
        reply_timeout: float | None = 15.0,
    ) -> None:
        if seed.db:
            raise ValueError("redis cluster: only database 0 exists")
        self.seed = seed
        self._opts: dict[str, Any] = dict(
            connections=connections, connect_timeout=connect_timeout,
            reply_timeout=reply_timeout,
        )
        self._nodes: dict[str, RespClient] = {}
        self._slot_node: list[str] = []  # slot -> "host:port" of its master
        self._stale = True
        self._refreshing: asyncio.Task[None] | None = None

    # ---- the slot map ---------------------------------------------------------------
    def _node(self, name: str) -> RespClient:
        client = self._nodes.get(name)
        if client is None:
            host, _, port = name.rpartition(":")
            client = RespClient(replace(self.seed, host=host, port=int(port)), **self._opts)
            self._nodes[name] = client
        return client

    async def refresh(self) -> None:
        """Ask the cluster for its slot map (one refresh at a time; callers share it)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        seed = f"{self.seed.host}:{self.seed.port}"
        candidates = [seed, *(n for n in self._nodes if n != seed)]
        last: Exception | None = None
        for name in candidates:
            host = name.rpartition(":")[0]
            try:
                reply = await self._node(name).execute("CLUSTER", "SLOTS")
            except (ConnectionError, OSError, ReplyError) as e:
                last = e
                continue
            table = [""] * SLOTS
            for start, end, master, *_replicas in reply:
                # an empty or unknown host means "the address you reached me at"
                mhost = master[0].decode() if master[0] not in (b"", b"?") else host
                owner = f"{mhost}:{int(master[1])}"
                for s in range(int(start), int(end) + 1):
                    table[s] = owner
            self._slot_node = table
            self._stale = False
            return
        if isinstance(last, ReplyError):
            raise last
        raise ConnectionError(f"redis cluster: no node answered CLUSTER SLOTS: {last}")

    def masters(self) -> list[str]:
        """The masters of the current slot map, as "host:port"."""
        return sorted({n for n in self._slot_node if n})

    def node_of(self, key: str) -> str:
        """The master that serves `key` by the current map ("host:port")."""
        return self._slot_node[key_slot(key)]

    # ---- commands -------------------------------------------------------------------
    async def execute(self, *args: Arg, key: str = "") -> Any:
        """Send one command to the master of `key`'s slot, following redirects."""
        if self._stale:
            await self.refresh()
        name = self._slot_node[key_slot(key)]
        if not name:
            await self.refresh()
            name = self._slot_node[key_slot(key)] or f"{self.seed.host}:{self.seed.port}"
        asking = False
        for _ in range(_MAX_REDIRECTS):
            node = self._node(name)
            try:
                if asking:
                    return await node.execute_asking(*args)
                return await node.execute(*args)
            except ReplyError as e:
                hop = _redirect(e)
                if hop is None:
                    if str(e).startswith("TRYAGAIN"):
                        await asyncio.sleep(0.05)
                        continue
                    raise
                kind, _slot, name = hop
                asking = kind == "ASK"
                if not asking:
                    self._stale = True  # refreshed by the next command, once for all
            except (ConnectionError, OSError):
                self._stale = True
                raise
        raise ReplyError(f"redis cluster: more than {_MAX_REDIRECTS} redirects for {key!r}")

    async def execute_on_masters(self, *args: Arg) -> list[Any]:
        """Send one command to every master (SCRIPT LOAD, PING); their replies in order."""
        if self._stale:
            await self.refresh()
        return list(await asyncio.gather(*(self._node(n).execute(*args)
                                           for n in self.masters())))

    async def close(self) -> None:
        """Close every node's connections."""
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
        for client in self._nodes.values():
            await client.close()
        self._nodes.clear()
