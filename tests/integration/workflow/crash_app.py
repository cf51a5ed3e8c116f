"""A workflow application as its own process, for kill -9 tests.

    python crash_app.py --server URL --port P --db bank.db --busi URL --gid G [--crash-at X]

Serves the resume endpoint on P, then (with --gid) runs the `transfer` workflow: branch 01
takes 30 from account 1 (local, under the barrier, in SQLite), branch 02 calls busi's
TransIn, branch 03 adds 30 to account 2 (local) with a commit callback that marks the
transfer done (local). With --crash-at the process SIGKILLs itself at that point, as a
crash would; without --gid it only serves, so the server's resume finishes the workflow.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from dtmx.client import BranchBarrier, DtmClient
from dtmx.client.workflow import Workflow, Workflows, aiohttp_handler
from tests.integration.workflow.ledger import Ledger

POINTS = ("after-local-commit", "after-http-call", "after-step-recorded", "in-commit")


def crash(args: argparse.Namespace, point: str) -> None:
    if args.crash_at == point:
        print(f"crashing at {point}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


async def main(args: argparse.Namespace) -> None:
    ledger = Ledger(args.db)
    client = DtmClient(args.server)
    workflows = Workflows(client, f"http://127.0.0.1:{args.port}/resume")

    @workflows.register("transfer")
    async def transfer(wf: Workflow, data: bytes) -> bytes:
        async def take(bb: BranchBarrier) -> None:
            await ledger.adjust(bb, 1, -30)
            crash(args, "after-local-commit")

        await wf.new_branch().do(take)
        await wf.new_branch().post(f"{args.busi}/TransIn", data)
        crash(args, "after-http-call")

        async def mark_done(bb: BranchBarrier) -> None:
            await ledger.adjust(bb, 3, 1)
            crash(args, "in-commit")

        async def give(bb: BranchBarrier) -> None:
            await ledger.adjust(bb, 2, 30)

        await wf.new_branch().on_commit(mark_done).do(give)
        crash(args, "after-step-recorded")
        return b"done"

    app = web.Application()
    app.router.add_route("*", "/resume", aiohttp_handler(workflows))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    print("serving", flush=True)
    if args.gid:
        try:
            print("result", await workflows.execute("transfer", args.gid, b'{"amount":30}'),
                  flush=True)
        except Exception as e:  # the test reads what happened from the output
            print("error", type(e).__name__, e, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--busi", required=True)
    p.add_argument("--gid", default="")
    p.add_argument("--crash-at", default="", choices=("", *POINTS))
    asyncio.run(main(p.parse_args()))
