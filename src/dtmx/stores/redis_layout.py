"""Where the Redis store keeps things: partitions, their hash tags, and the pure rules that
fan a verb out over partitions (limits shared out, scan pages merged). No I/O.

A transaction lives in partition `crc32(gid) % n`. Every key of a partition carries the
partition's hash tag `{<base>:<p>}`, so in a Redis Cluster one partition is one slot: the
Lua scripts still touch a transaction and its partition's indexes atomically, while the
partitions (64 by default) spread over all the masters. Keys shared by the whole store (the
key-value categories, the layout record, the server list) carry the tag `{<base>}`.

Per partition `T = {<base>:<p>}` (see redis_lua/prelude.lua for the fields):
  T:g:<gid>, T:b:<gid>   the transaction and its branch ops
  T:cron   zset gid -> next_cron_time (unfinished only)
  T:fin    zset gid -> update_time (finished only)
  T:all    zset gid -> scan order (`all_score`), T:seq its counter, T:sweep the sweep cursor
  T:lease  hash owner, until: which server polls this partition
Shared `M = {<base>}`: M:layout (hash partitions), M:nodes (zset server -> alive until),
M:kv:<cat>, M:kvi:<cat>, M:kvseq (unchanged from the single-slot layout).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dtmx.errors import ConfigError

#: low bits of a scan-order score: partition number and a per-partition counter
ORDER_BITS = 11
MAX_PARTITIONS = 1 << 10


@dataclass(frozen=True)
class Layout:
    """Key names of a store with `partitions` partitions under `prefix`."""

    prefix: str
    partitions: int
    base: str = field(init=False)
    meta: str = field(init=False)
    tags: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = self.partitions
        if n < 1 or n > MAX_PARTITIONS or n & (n - 1):
            raise ConfigError(
                f"Store.RedisPartitions must be a power of two in 1..{MAX_PARTITIONS}, not {n}"
            )
        p = self.prefix
        tagged = len(p) > 2 and p[0] == "{" and p[-1] == "}" and "}" not in p[1:-1]
        base = p[1:-1] if tagged else p
        object.__setattr__(self, "base", base)
        # a tagged prefix keeps the key-value keys exactly where the single-slot layout had them
        object.__setattr__(self, "meta", p if tagged else "{" + p + "}")
        object.__setattr__(self, "tags", tuple(f"{{{base}:{i}}}" for i in range(n)))

    def part(self, gid: str) -> int:
        """The partition of a gid."""
        return zlib.crc32(gid.encode()) % self.partitions

    def tag(self, gid: str) -> str:
        """The hash tag (and key prefix) of a gid's partition."""
        return self.tags[zlib.crc32(gid.encode()) % self.partitions]

    def key(self, p: int, name: str) -> str:
        """A per-partition key: cron, fin, all, seq, sweep, lease."""
        return f"{self.tags[p]}:{name}"

    def match(self) -> str:
        """A SCAN pattern for every key of this store (meta and partitions)."""
        return "{" + _glob_escape(self.base) + "*"


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


def share(partitions: int, servers: int) -> int:
    """How many partitions one of `servers` live servers polls at most."""
    return math.ceil(partitions / max(1, servers))


def allocate(counts: Iterable[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """Share `limit` out over (partition, available) pairs in the order given."""
    out: list[tuple[int, int]] = []
    left = limit
    for p, c in counts:
        if left <= 0:
            break
        if c > 0:
            take = min(c, left)
            out.append((p, take))
            left -= take
    return out


@dataclass(frozen=True, slots=True)
class ScanPart:
    """One partition's answer to a scan: matching rows newest first with their scores,
    and `frontier`, the score below which it examined nothing (None: it saw everything)."""

    rows: Sequence[tuple[int, list[bytes]]]
    frontier: int | None


def merge_scan(parts: Sequence[ScanPart], limit: int) -> tuple[list[list[bytes]], str]:
    """One page newest first from every partition's answer, and the next position.

    Every entry scoring at or above the highest frontier was examined in every partition,
    so those rows are final in order; the page ends at `limit` rows or at that frontier.
    """
    fronts = [p.frontier for p in parts if p.frontier is not None]
    floor = max(fronts) if fronts else None
    rows = sorted((r for p in parts for r in p.rows
                   if floor is None or r[0] >= floor), key=lambda r: r[0], reverse=True)
    if len(rows) > limit:
        page = rows[:limit]
        return [r[1] for r in page], str(page[-1][0])
    return [r[1] for r in rows], "" if floor is None else str(floor)


def rotation(partitions: int, node: str) -> list[int]:
    """The order in which `node` looks at partitions: from a node-specific start, so
    servers starting together reach for different partitions first."""
    start = zlib.crc32(node.encode()) % partitions
    return [(start + i) % partitions for i in range(partitions)]


@dataclass
class LeaseBook:
    """What one server knows of the partition leases: the ones it holds, and until when
    another server's lease makes looking again pointless. Pure bookkeeping."""

    partitions: int
    node: str
    mine: set[int] = field(default_factory=set)
    busy_until: dict[int, float] = field(default_factory=dict)

    def plan(self, now: float, servers: int) -> tuple[list[int], list[int], list[int]]:
        """(renew, acquire, release): partitions to call this round, by what for."""
        order = rotation(self.partitions, self.node)
        want = share(self.partitions, servers)
        held = [p for p in order if p in self.mine]
        release = held[want:] if len(held) > want else []
        renew = held[:want]
        acquire: list[int] = []
        if len(renew) < want:
            # every partition that may be free: some of them are taken by others in the
            # meantime, and what is held beyond the share is given back next round
            acquire = [p for p in order
                       if p not in self.mine and self.busy_until.get(p, -math.inf) <= now]
        return renew, acquire, release

    def record(self, p: int, held: bool, until: float, now: float, recheck: float) -> None:
        """The answer of partition `p`'s lease script."""
        if held:
            self.mine.add(p)
            self.busy_until.pop(p, None)
        else:
            self.mine.discard(p)
            # the holder may give it up before its lease ends (a new server joined)
            self.busy_until[p] = min(until, now + recheck)
