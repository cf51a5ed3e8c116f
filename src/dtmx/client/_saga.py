"""Saga: a list of steps the server runs forward, compensating in reverse on failure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Self

import orjson

from dtmx.client._base import Payload, TransBase, encode_payload
from dtmx.client._consts import TransType

if TYPE_CHECKING:
    from dtmx.client._client import DtmClient


class Saga(TransBase):
    """A saga transaction: add steps, optionally order them concurrently, then submit.

    >>> saga = Saga(client, gid).add(out_url, out_revert_url, {"amount": 30})
    >>> await saga.submit()
    """

    trans_type = TransType.SAGA

    def __init__(self, client: DtmClient, gid: str) -> None:
        super().__init__(client, gid)
        self.steps: list[dict[str, str]] = []
        self.payloads: list[str | bytes] = []
        #: Run steps concurrently, subject to `orders`.
        self.concurrent = False
        #: step index -> indices of the steps that must succeed before it starts.
        self.orders: dict[int, list[int]] = {}

    def add(self, action_url: str, compensate_url: str, payload: Payload = None) -> Self:
        """Append a step; `payload` is posted to both URLs (see `encode_payload`)."""
        self.steps.append({"action": action_url, "compensate": compensate_url})
        self.payloads.append(encode_payload(payload))
        return self

    def enable_concurrent(self) -> Self:
        """Run steps concurrently: each starts once its prerequisites (if any) succeeded."""
        self.concurrent = True
        return self

    def add_branch_order(self, step: int, prerequisites: Iterable[int]) -> Self:
        """Start step `step` (0-based) only after all `prerequisites` succeeded.

        Orders only matter to a concurrent saga, so this also enables concurrency.
        Prerequisites must be earlier steps, which rules out cycles.
        """
        pre = list(prerequisites)
        if step < 0 or any(p < 0 or p >= step for p in pre):
            raise ValueError(f"step {step} may only wait for earlier steps, not {pre}")
        self.orders[step] = pre
        self.concurrent = True
        return self

    def custom_data(self) -> str:
        """`{"concurrent": true, "orders": {"1": [0]}}` for a concurrent saga, else ""."""
        if not self.concurrent:
            return ""
        for step in self.orders:
            if step >= len(self.steps):
                raise ValueError(f"branch order names step {step}, saga has {len(self.steps)}")
        # JSON object keys are strings; the server reads them back as step indices.
        orders = {str(k): v for k, v in sorted(self.orders.items())}
        return orjson.dumps({"concurrent": True, "orders": orders}).decode()

    def to_body(self) -> dict[str, Any]:
        """The submit body: steps, payloads, custom_data and options."""
        body = super().to_body()
        body["steps"] = [dict(s) for s in self.steps]
        body["payloads"] = list(self.payloads)
        body["concurrent"] = self.concurrent
        return body

    async def submit(self) -> None:
        """Submit the saga. With `wait_result`, raise `TransactionFailed` if it ended
        failed, `StillRunning` if it had not finished when the server answered."""
        if not self.steps:
            raise ValueError("a saga needs at least one step")
        await self._submit()
