"""DTM's workflow mode: a transaction written as an ordinary `async def`.

Register workflow functions by name on a `Workflows`, run one with `execute(name, gid,
data)`. Inside, each `wf.new_branch()` step (local code, an HTTP or gRPC call, a TCC try)
is recorded on the server; if the run stops (a crash, an error, `Ongoing`) the server calls
the workflow back at its resume endpoint and it runs again, the recorded steps answering
from the record instead of running twice. A `Failure` rolls back the branches that ran
(their `on_rollback` callbacks, newest first); success runs their `on_commit` callbacks.

Resume endpoints: `starlette_endpoint` (Starlette, FastAPI), `aiohttp_handler`, and for
gRPC `dtmx.client.workflow.grpc.add_grpc_servicer` (with `WorkflowInterceptor` to record
gRPC calls made through a stub). See docs/workflow.md.
"""

from __future__ import annotations

from dtmx.client.workflow._callback import aiohttp_handler, resume, starlette_endpoint
from dtmx.client.workflow._record import WorkflowDiverged
from dtmx.client.workflow._registry import UnknownWorkflow, WorkflowFn, Workflows
from dtmx.client.workflow._steps import Branch
from dtmx.client.workflow._workflow import Workflow

__all__ = [
    "Branch",
    "UnknownWorkflow",
    "Workflow",
    "WorkflowDiverged",
    "WorkflowFn",
    "Workflows",
    "aiohttp_handler",
    "resume",
    "starlette_endpoint",
]
