"""Workflows from blocking code: `SyncWorkflows.execute` runs one from a plain function, and
a WSGI app (the standard library's wsgiref, as a Flask or Django app would) serves the
resume endpoint with `SyncWorkflows.resume`, so the server's resume replays the workflow
there. The workflow functions stay `async def`; a plain `def` is refused at registration."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests

from dtmx.client import Failure, Ongoing
from dtmx.client.barrier import BranchBarrier
from dtmx.client.sync import SyncDtmClient, SyncWorkflows
from dtmx.client.workflow import Workflow
from tests.support.busi import BusiServer
from tests.support.server import ServerProcess
from tests.support.services import store_block
from tests.support.util import free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """SQLite only: the sync face only moves the calls to the SDK's own loop thread; the
    stores' part of the same calls runs on every store in the other workflow tests."""
    workdir = str(tmp_path_factory.mktemp("dtmx"))
    s = ServerProcess(store=store_block("sqlite", "wf_sync", workdir), workdir=workdir).start()
    yield s
    s.stop()


def resume_app(workflows: SyncWorkflows) -> Callable[..., Iterable[bytes]]:
    """The resume endpoint as a WSGI app (GET and POST)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        status, answer = workflows.resume(query, body)
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json")])
        return [json.dumps(answer).encode()]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class App:
    """A blocking application: a sync client, its workflows, a WSGI resume endpoint."""

    def __init__(self, server: ServerProcess) -> None:
        port = free_port()
        self.client = SyncDtmClient(server.url)
        self.workflows = SyncWorkflows(
            self.client, callback=f"http://127.0.0.1:{port}/workflow/resume"
        )
        self.resumes: list[str] = []
        app = resume_app(self.workflows)

        def counting(environ: dict[str, Any], start_response: Callable[..., Any]
                     ) -> Iterable[bytes]:
            self.resumes.append(environ.get("QUERY_STRING", ""))
            return app(environ, start_response)

        self.httpd: WSGIServer = make_server("127.0.0.1", port, counting, handler_class=_Quiet)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)
        self.client.close()


@pytest.fixture
def app(server: ServerProcess) -> Iterator[App]:
    a = App(server)
    yield a
    a.stop()


def test_execute_from_blocking_code_and_resume_through_wsgi(
    server: ServerProcess, app: App, busi: BusiServer
) -> None:
    gid = f"wf-sync-{uuid.uuid4().hex}"
    ran: list[str] = []
    ready = [False]

    @app.workflows.register("transfer", retry_interval=60)
    async def transfer(wf: Workflow, data: bytes) -> bytes:
        await wf.new_branch().do(lambda bb: ran.append("take") or b"taken", name="take")
        await wf.new_branch().post(f"{busi.url}/TransIn", data)
        if not ready[0]:
            raise Ongoing("not yet")
        return b"done"

    assert app.workflows.names == ["transfer"]
    with pytest.raises(Ongoing):
        app.workflows.execute("transfer", gid, b'{"amount":30}')
    assert server.status(gid) == "prepared"
    ready[0] = True
    # due now rather than after the 60 s retry interval: the server calls the WSGI endpoint
    requests.post(f"{server.url}/resetNextCronTime", json={"gid": gid}, timeout=5
                  ).raise_for_status()
    server.wait_status(gid, "succeed")
    assert any(f"gid={gid}" in q and "op=transfer" in q for q in app.resumes)
    assert ran == ["take"]  # the replay answered the local step from its record
    assert busi.state.applied_count("TransIn", gid) == 1
    assert server.query(gid)["transaction"]["result"] == "ZG9uZQ=="  # b"done"
    # executing a finished workflow answers its recorded result
    assert app.workflows.execute("transfer", gid, b'{"amount":30}') == b"done"


def test_failure_rolls_back_and_raises_in_blocking_code(
    server: ServerProcess, app: App, busi: BusiServer
) -> None:
    gid = f"wf-sync-{uuid.uuid4().hex}"
    rolled_back: list[str] = []
    busi.state.set("TransIn", "FAILURE")

    async def give_back(bb: BranchBarrier) -> None:
        rolled_back.append(bb.op)

    async def transfer(wf: Workflow, data: bytes) -> None:
        await wf.new_branch().on_rollback(give_back).do(lambda bb: b"taken")
        await wf.new_branch().post(f"{busi.url}/TransIn", data)

    app.workflows.add("transfer", transfer)
    with pytest.raises(Failure):
        app.workflows.execute("transfer", gid, b'{"amount":30}')
    assert server.status(gid) == "failed"
    assert rolled_back == ["rollback"]


def test_plain_def_is_refused_and_resume_answers_like_the_async_endpoints(app: App) -> None:
    def plain(wf: Workflow, data: bytes) -> None:
        pass

    with pytest.raises(TypeError, match=r"'blocking': .*plain is not an async def"):
        app.workflows.register("blocking")(plain)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not an async def"):
        app.workflows.add("blocking", plain)  # type: ignore[arg-type]
    assert app.workflows.names == []
    status, answer = app.workflows.resume({"gid": "g1", "op": "nope"}, b"")
    assert status == 404 and "'nope' is not registered" in answer["message"]
    status, _ = app.workflows.resume({"op": "nope"}, b"")
    assert status == 400
