"""Workflow transfers: the bank's saga written as a DTM workflow (`dtmx.client.workflow`),
with the resume endpoint the servers call back.

The `transfer` workflow takes the money out (branch 01, `TransOut`, rolled back by
`TransOutRevert`) and puts it in (branch 02, `TransIn`, rolled back by `TransInRevert`),
each an HTTP step to the bank, whose handlers run under the barrier (ops `action` and
`rollback`). A refused transfer fails at `TransIn` (409: `Failure`), and the rollback gives
the money back. A step that errs (a branch fault, the bank dropping a late request, a server
down) stops the run; the server that holds the workflow then calls the resume endpoint
here, and the run replays from its recorded steps. The "crashing" client stops on purpose
after its first step, once, and leaves the rest to the servers' callbacks.

Every callback is logged like a bank call (owner token, start, end): the servers make them
under a claim, so the two-owners check covers them too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from dtmx.client import BranchBarrier, DtmClient
from dtmx.client.workflow import Workflow, Workflows, resume

NAME = "transfer"
RESUME_PATH = "/wf/resume"


class ClientCrash(Exception):
    """The workflow's client stops halfway (its process "dies"): not a Failure, so the
    workflow stays unfinished and the servers' callbacks must finish it."""


class WorkflowClients:
    """One `Workflows` registry per server (the client that starts a workflow talks to its
    server), the resume endpoint, and its call log."""

    def __init__(self, clients: list[DtmClient], bank_url: str, callback_url: str,
                 barrier_table: str, owner_header: str,
                 registry_of: Callable[[str], int]) -> None:
        self.bank = bank_url
        self.owner_header = owner_header
        #: which registry a gid was started from (a resume must take the same lock)
        self.registry_of = registry_of
        self.registries = [Workflows(c, callback_url, barrier_table=barrier_table)
                           for c in clients]
        for r in self.registries:
            r.add(NAME, self._transfer)
        #: gids whose client is to "crash" after the first step (removed when it did)
        self.crash_once: set[str] = set()
        self.stopped = 0  # clients that did stop halfway
        #: the servers' resume calls, logged as the bank logs its calls
        self.calls: list[dict[str, Any]] = []

    async def execute(self, server: int, gid: str, payload: dict[str, object]) -> bytes:
        """Run the transfer as workflow `gid` through server `server`'s registry."""
        return await self.registries[server].execute(NAME, gid, orjson.dumps(payload))

    async def _transfer(self, wf: Workflow, data: bytes) -> bytes:
        bank, body = self.bank, data

        async def give_back(_: BranchBarrier) -> None:
            await wf.request("POST", f"{bank}/TransOutRevert", data=body)

        async def take_back(_: BranchBarrier) -> None:
            await wf.request("POST", f"{bank}/TransInRevert", data=body)

        await wf.new_branch().on_rollback(give_back).request(
            "POST", f"{bank}/TransOut", data=body)
        if wf.gid in self.crash_once:
            self.crash_once.discard(wf.gid)
            self.stopped += 1
            raise ClientCrash(f"{wf.gid}: the client stops after its first step")
        await wf.new_branch().on_rollback(take_back).request(
            "POST", f"{bank}/TransIn", data=body)
        return b"transferred"

    async def resume_handler(self, request: web.Request) -> web.Response:
        """The resume endpoint: run the workflow again (logged with the caller's token)."""
        q = {k: request.query.get(k, "") for k in ("gid", "branch_id", "op", "trans_type")}
        entry: dict[str, Any] = {"route": "WorkflowResume", **q,
                                 "owner": request.headers.get(self.owner_header, ""),
                                 "t0": time.time(), "fault": "none", "dup": False,
                                 "applied": False}
        registry = self.registries[self.registry_of(q["gid"])]
        entry["status"] = 499  # the caller went away and the handler was cancelled
        try:
            # every outcome is an answer (a ClientCrash too: an error, called again later)
            status, body = await resume(registry, request.query, await request.read())
            entry["status"] = status
        finally:  # logged whatever happens: the two-owners check needs every call
            entry["t1"] = time.time()
            self.calls.append(entry)
        return web.json_response(body, status=status)


async def serve(handler: Callable[[web.Request], Any], port: int) -> web.AppRunner:
    """Listen on 127.0.0.1:`port` with the resume endpoint at RESUME_PATH."""
    app = web.Application()
    app.router.add_route("*", RESUME_PATH, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner
