"""Workflow tests: a real dtmx server per store, the busi branch service, and an app that
serves the workflows' resume endpoint (HTTP, and gRPC for the gRPC scenarios)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc.aio
import pytest
from aiohttp import web

from dtmx.client import DtmClient
from dtmx.client.workflow import Workflows, aiohttp_handler
from dtmx.client.workflow.grpc import EXECUTE_METHOD, add_grpc_servicer
from tests.support.busi import BusiServer
from tests.support.scratch import scratch_store
from tests.support.server import ServerProcess
from tests.support.services import STORES
from tests.support.util import aeventually, free_port


@pytest.fixture(scope="package", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """Every workflow scenario runs once per store: SQLite, MySQL, PostgreSQL and Redis."""
    workdir = str(tmp_path_factory.mktemp("dtmx"))
    with scratch_store(request.param, "dtmx_wf", workdir) as block, \
            ServerProcess(store=block, workdir=workdir) as s:
        yield s


@pytest.fixture
def busi() -> Iterator[BusiServer]:
    b = BusiServer(free_port()).start()
    yield b
    b.stop()


@pytest.fixture
def gid() -> str:
    return f"wf-{uuid.uuid4().hex}"


class WfApp:
    """The application side: a client, its `Workflows` (HTTP resume) and, for gRPC
    scenarios, `grpc_workflows` resumed over `workflow.Workflow/Execute`."""

    def __init__(self, server: ServerProcess) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.client = DtmClient(server.url)
        self.workflows = Workflows(
            self.client, f"http://127.0.0.1:{self.http_port}/workflow/resume"
        )
        from dtmx.client.grpc import GrpcTransport

        self.grpc_client = DtmClient(transport=GrpcTransport(
            server.grpc_target, http_server=server.url
        ))
        self.grpc_workflows = Workflows(
            self.grpc_client, f"127.0.0.1:{self.grpc_port}{EXECUTE_METHOD}"
        )
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None

    async def start(self) -> WfApp:
        app = web.Application()
        app.router.add_route("*", "/workflow/resume", aiohttp_handler(self.workflows))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.http_port).start()
        self._grpc = grpc.aio.server()
        add_grpc_servicer(self._grpc, self.grpc_workflows)
        self._grpc.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        await self._grpc.start()
        return self

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=None)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.client.aclose()
        await self.grpc_client.aclose()


@pytest.fixture
async def app(server: ServerProcess) -> AsyncIterator[WfApp]:
    a = await WfApp(server).start()
    yield a
    await a.stop()


async def wait_status(server: ServerProcess, gid: str, status: str, timeout: float = 15.0) -> None:
    """Wait for `gid` to reach `status` without blocking the loop (the resume endpoint
    runs on it)."""

    async def check() -> bool:
        return await asyncio.to_thread(server.status, gid) == status

    try:
        await aeventually(check, timeout=timeout)
    except AssertionError:
        q = await asyncio.to_thread(server.query, gid)
        raise AssertionError(f"{gid} not {status} within {timeout}s: {q}") from None
