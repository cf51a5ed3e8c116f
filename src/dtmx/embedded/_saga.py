"""`SagaFlow`: a saga written as decorated functions, each step with its compensation.

    transfer = SagaFlow("transfer")

    async def refund(b: LocalBranch) -> None: ...

    @transfer.step(compensate=refund)
    async def debit(b: LocalBranch) -> None: ...

    gid = await transfer.run(dtm.client, {"amount": 30})

Steps run in the order they were declared; a step may also be a remote branch
(`transfer.remote(action_url, compensate_url)`), and `transfer.saga(client, payload)` gives
the SDK `Saga` to add more steps or options to before submitting it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dtmx.client._base import Payload
from dtmx.client._client import DtmClient
from dtmx.client._saga import Saga
from dtmx.client.barrier._sql import DEFAULT_TABLE
from dtmx.embedded._functions import ConnSource, F, Functions, LocalFunction, functions

Compensation = LocalFunction[Any] | Callable[..., Any] | str | None


@dataclass(frozen=True, slots=True)
class _Step:
    action: str
    compensate: str


class SagaFlow:
    """A named saga whose steps are local functions (registered in `functions` as
    ``<name>.<function>``) or remote URLs, in declaration order."""

    def __init__(self, name: str, *, functions: Functions = functions) -> None:
        self.name = name
        self.functions = functions
        self._steps: list[_Step] = []

    def _url(self, fn: Compensation, *, db: ConnSource | None, table: str) -> str:
        if fn is None:
            return ""
        if isinstance(fn, str):
            return fn
        if isinstance(fn, LocalFunction):
            return fn.url
        return self.functions.add(fn, f"{self.name}.{fn.__name__}", db=db, table=table).url

    def step(self, *, compensate: Compensation = None, db: ConnSource | None = None,
             table: str = DEFAULT_TABLE) -> Callable[[F], LocalFunction[F]]:
        """Decorator: the function is the next step's action, `compensate` (a function,
        a registered `LocalFunction` or a URL) undoes it. With `db`, both run in the
        barrier on a connection from `db` and take it as their second argument."""

        def register(fn: F) -> LocalFunction[F]:
            action = self.functions.add(fn, f"{self.name}.{fn.__name__}", db=db, table=table)
            self._steps.append(_Step(action.url, self._url(compensate, db=db, table=table)))
            return action

        return register

    def remote(self, action_url: str, compensate_url: str = "") -> SagaFlow:
        """Append a step served elsewhere (http(s):// or gRPC URL)."""
        self._steps.append(_Step(action_url, compensate_url))
        return self

    def saga(self, client: DtmClient, payload: Payload = None, *, gid: str = "") -> Saga:
        """The SDK `Saga` of these steps, each posted `payload`; not yet submitted."""
        if not self._steps:
            raise ValueError(f"saga flow {self.name!r} has no steps")
        s = client.saga(gid)
        for st in self._steps:
            s.add(st.action, st.compensate, payload)
        return s

    async def submit(self, client: DtmClient, payload: Payload = None, *, gid: str = "",
                     wait: bool = False) -> str:
        """Submit a new saga of these steps (gid: fresh unless given); with `wait`,
        return once it succeeded (`TransactionFailed` if it rolled back). Returns the gid."""
        s = self.saga(client, payload, gid=gid or await client.new_gid())
        s.wait_result = wait
        await s.submit()
        return s.gid

    async def run(self, client: DtmClient, payload: Payload = None, *, gid: str = "") -> str:
        """`submit(..., wait=True)`: the saga has finished successfully when this returns."""
        return await self.submit(client, payload, gid=gid, wait=True)
