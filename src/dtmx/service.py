"""The transport-free service: what every HTTP route and gRPC method does.

The HTTP and gRPC adapters parse their input into these calls and map `DtmxError`s to their
own results; nothing here knows about either transport.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dtmx.core.models import KV, Branch, ScanFilter, Transaction
from dtmx.core.request import TransRequest


class Service:
    """Skeleton: the lead fills these in (signatures are the contract for the adapters)."""

    async def new_gid(self) -> str:
        raise NotImplementedError

    async def prepare(self, req: TransRequest) -> None:
        raise NotImplementedError

    async def submit(self, req: TransRequest) -> None:
        """Raises Failure (409/ABORTED) or Ongoing (425/FAILED_PRECONDITION) as DTM does."""
        raise NotImplementedError

    async def abort(self, req: TransRequest) -> None:
        raise NotImplementedError

    async def force_stop(self, gid: str) -> None:
        raise NotImplementedError

    async def reset_next_cron_time(self, gid: str) -> None:
        raise NotImplementedError

    async def reset_cron_time(self, *, timeout: float, limit: int) -> tuple[int, bool]:
        raise NotImplementedError

    async def register_branch(self, data: Mapping[str, Any]) -> None:
        """`data` is DTM's registerBranch map of strings (gid, trans_type, branch_id, ...)."""
        raise NotImplementedError

    async def prepare_workflow(
        self, req: TransRequest
    ) -> tuple[Transaction, list[Branch]]:
        raise NotImplementedError

    async def query(self, gid: str) -> tuple[Transaction | None, list[Branch]]:
        raise NotImplementedError

    async def all(
        self, *, gid: str, position: str, limit: int, filters: ScanFilter
    ) -> tuple[list[Transaction], str]:
        raise NotImplementedError

    async def subscribe(self, topic: str, url: str, remark: str) -> None:
        raise NotImplementedError

    async def unsubscribe(self, topic: str, url: str) -> None:
        raise NotImplementedError

    async def delete_topic(self, topic: str) -> None:
        raise NotImplementedError

    async def scan_kv(self, *, cat: str, position: str, limit: int) -> tuple[list[KV], str]:
        raise NotImplementedError

    async def query_kv(self, *, cat: str, key: str) -> list[KV]:
        raise NotImplementedError
