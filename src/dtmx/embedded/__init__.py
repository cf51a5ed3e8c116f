"""dtmx inside the application: the engine in the running asyncio loop, local branches.

    from dtmx.embedded import Embedded, LocalBranch, local

    @local("debit")
    async def debit(b: LocalBranch) -> None: ...

    async with Embedded("sqlite:///app.db") as dtm:
        saga = dtm.client.saga(await dtm.client.new_gid())
        saga.add(debit.url, "", {"amount": 30})
        await saga.submit()

The engine is the server's (same stores, schema, poller, leases): application processes
and `dtmx serve` processes may share a store. See docs/embedded.md.
"""

from __future__ import annotations

from dtmx.client import Failure, Ongoing, TransactionFailed
from dtmx.embedded._engine import Embedded
from dtmx.embedded._functions import ConnSource, Functions, LocalBranch, LocalFunction, functions
from dtmx.embedded._saga import SagaFlow

#: Decorator of the default registry: ``@local("name")`` registers ``local://name``.
local = functions.local

__all__ = [
    "ConnSource",
    "Embedded",
    "Failure",
    "Functions",
    "LocalBranch",
    "LocalFunction",
    "Ongoing",
    "SagaFlow",
    "TransactionFailed",
    "functions",
    "local",
]
