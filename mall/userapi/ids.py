"""User ids allocated by user-api before the saga starts (snowflake layout).

The saga's steps are fixed when it is submitted, so the score step must know the user id
before saveUser runs: user-api makes the id itself and passes it to both steps. 41 bits of
milliseconds since 2024-01-01, 10 bits of node id, 12 bits of sequence: unique across
user-api instances with distinct node ids, roughly time-ordered, and a positive int64.
"""

from __future__ import annotations

import os
import threading
import time

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NODE_BITS = 10
SEQ_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1
MAX_SEQ = (1 << SEQ_BITS) - 1


class Snowflake:
    """Thread-safe generator of 63-bit ids for one node."""

    def __init__(self, node: int | None = None) -> None:
        if node is None:
            # No configured node id: the pid spreads instances on one host well enough.
            node = os.getpid() & MAX_NODE
        if not 0 <= node <= MAX_NODE:
            raise ValueError(f"node id must be 0..{MAX_NODE}")
        self.node = node
        self._lock = threading.Lock()
        self._last = -1
        self._seq = 0

    def next_id(self) -> int:
        """A new id, never repeated by this generator (waits out a clock step backwards)."""
        with self._lock:
            now = int(time.time() * 1000) - EPOCH_MS
            if now < self._last:
                now = self._last  # clock went back: keep counting on the last millisecond
            if now == self._last:
                self._seq = (self._seq + 1) & MAX_SEQ
                if self._seq == 0:  # 4096 ids this millisecond: move to the next one
                    now = self._last + 1
            else:
                self._seq = 0
            self._last = now
            return (now << (NODE_BITS + SEQ_BITS)) | (self.node << SEQ_BITS) | self._seq
