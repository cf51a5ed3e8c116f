"""`Embedded`: the dtmx engine inside the application's own asyncio loop.

The same `Engine`, `Run`, `Poller` and stores as `dtmx serve`, started on a store URL: the
schema, migrations, leases and owner tokens are the server's, so application processes and
servers may share one store and take over each other's work. Branch URLs may name local
functions (`local://name`) beside http(s):// and gRPC ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from types import TracebackType

import orjson

from dtmx.client._client import DtmClient
from dtmx.client._errors import raise_for_response
from dtmx.client.workflow import Workflows
from dtmx.client.workflow._callback import resume
from dtmx.clock import Clock, GidFactory, SystemClock
from dtmx.core.branch_policy import DEFAULT_SCHEMES, BranchPolicy
from dtmx.core.local import LOCAL_PREFIX, LOCAL_SCHEME
from dtmx.core.timing import Timing, expire_every
from dtmx.embedded._functions import Functions, LocalBranch, functions
from dtmx.embedded._transport import EmbeddedTransport
from dtmx.engine import Engine
from dtmx.heartbeat import Heartbeat
from dtmx.invoke.base import Invoker
from dtmx.invoke.http_invoker import HttpInvoker, Router
from dtmx.invoke.local import LocalInvoker
from dtmx.poller import Poller
from dtmx.security.redact import AnswerCap
from dtmx.service import Service
from dtmx.settings import Settings
from dtmx.store_settings import StoreSettings
from dtmx.stores import make_store
from dtmx.stores.base import Store

log = logging.getLogger("dtmx.embedded")


def _grpc_invoker() -> Invoker | None:
    try:
        from dtmx.invoke.grpc import GrpcInvoker
    except ImportError:  # grpcio is optional
        return None
    return GrpcInvoker()


class Embedded:
    """An engine, its poller and a `DtmClient` over it, for the life of an ``async with``.

    `store` is a store URL (``sqlite:///path``, ``postgresql://u:p@h/db``, ``mysql://...``,
    ``redis://h:6379/0``) or a `StoreSettings` (for a Postgres schema or a Redis prefix).
    `functions` is the registry of local functions this process offers (default: the
    module-level one of `dtmx.embedded.local`). The timing arguments are the server's
    settings of the same names, in seconds.
    """

    def __init__(
        self,
        store: str | StoreSettings = "sqlite:///dtmx.db",
        *,
        functions: Functions = functions,
        poll_interval: float = 1.0,
        retry_interval: float = 10.0,
        max_retry_interval: float = 3600.0,
        request_timeout: float = 3.0,
        timeout_to_fail: float = 35.0,
        lease: float = 30.0,
        heartbeat_interval: float = 5.0,
        pool_size: int = 16,
        clock: Clock | None = None,
    ) -> None:
        st = store if isinstance(store, StoreSettings) else StoreSettings(Url=store)
        self.settings = Settings(Store=replace(st, MaxOpenConns=pool_size))
        self.functions = functions
        self.clock: Clock = clock or SystemClock()
        self.timing = Timing(retry_interval=retry_interval,
                             max_retry_interval=max_retry_interval,
                             request_timeout=request_timeout, timeout_to_fail=timeout_to_fail,
                             lease=lease)
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.store: Store | None = None
        self._engine: Engine | None = None
        self._client: DtmClient | None = None
        self._poller: Poller | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._heartbeat: Heartbeat | None = None
        self._adopt_task: asyncio.Task[None] | None = None
        self._adopted: set[asyncio.Task[object]] = set()

    @property
    def engine(self) -> Engine:
        """The running engine (RuntimeError before start)."""
        if self._engine is None:
            raise RuntimeError("Embedded is not started: use `async with Embedded(...)`")
        return self._engine

    @property
    def client(self) -> DtmClient:
        """A `DtmClient` whose transport is this engine: saga, tcc, msg and query as with
        a remote server."""
        if self._client is None:
            raise RuntimeError("Embedded is not started: use `async with Embedded(...)`")
        return self._client

    def workflows(self, *, name: str = "dtmx.workflow.resume") -> Workflows:
        """The workflow SDK (`dtmx.client.workflow.Workflows`) over this engine, resumed
        through a local function (`local://<name>`, registered here) instead of an HTTP
        or gRPC endpoint: register workflows on it and `execute` them as usual."""
        wfs = Workflows(self.client, callback=LOCAL_PREFIX + name)
        wfs.protocol = "http"  # the callback gets the workflow's input as it is

        async def resume_workflow(b: LocalBranch) -> None:
            query = {"gid": b.gid, "op": b.op, "trans_type": b.trans_type}
            status, body = await resume(wfs, query, b.payload)
            raise_for_response(status, orjson.dumps(body).decode())

        self.functions.add(resume_workflow, name)
        return wfs

    async def start(self) -> None:
        """Open the store (creating the schema on first use), start the poller."""
        store = make_store(self.settings)
        await store.open()
        self.store = store
        local = LocalInvoker(self.functions)
        # answers (a Failure's message too) end in rollback_reason: capped as the server's
        answers = self.settings.BranchAnswers
        invoker = AnswerCap(Router(HttpInvoker(), _grpc_invoker(), local),
                            max_bytes=answers.MaxBytes, withhold=answers.Withhold)
        engine = Engine(store=store, invoker=invoker, clock=self.clock, timing=self.timing,
                        local_functions=self.functions)
        self._engine = engine
        # The URLs come from this program itself, not from remote clients: the server's
        # default denials (cloud metadata addresses) guard against those, and judging
        # them costs a policy hash per URL on every submit.
        policy = BranchPolicy.build(schemes=(*DEFAULT_SCHEMES, LOCAL_SCHEME),
                                    deny_defaults=False)
        service = Service(engine=engine, new_gid=GidFactory(self.clock), policy=policy)
        transport = EmbeddedTransport(service, local, limits=engine.limits,
                                      request_timeout=self.timing.request_timeout)
        self._client = DtmClient(transport=transport)
        ttl = self.settings.Store.FinishedDataExpire
        self._poller = Poller(engine, interval=self.poll_interval, finished_ttl=float(ttl),
                              expire_every=expire_every(ttl, self.poll_interval))
        self._poll_task = asyncio.create_task(self._poller.run())
        self._adopt_task = asyncio.create_task(self._adopt())
        self._heartbeat = Heartbeat(store, self.clock, interval=self.heartbeat_interval,
                                    http_port=0, grpc_port=0,
                                    in_flight=lambda: engine.runs_in_flight)
        self._heartbeat.start()

    async def _adopt(self) -> None:
        """Every poll interval, claim what other processes handed back for want of our
        functions (dtmx.core.local) and run it, as the poller runs what it claims."""
        engine = self.engine
        while True:
            try:
                for trans in await engine.adopt_waiting(limit=16):
                    task: asyncio.Task[object] = asyncio.create_task(engine.resume(trans))
                    self._adopted.add(task)
                    task.add_done_callback(self._adopted.discard)
            except Exception as e:  # a store outage: the poller reports it; try again later
                log.debug("adopting handed-back transactions failed: %s", e)
            await self.clock.sleep(self.poll_interval)

    async def stop(self) -> None:
        """Stop polling and the runs in flight (they hand their claims back, due now, for
        this or another process to finish), then close the store."""
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        if self._poller is not None:
            await self._poller.stop()
        for t in [self._adopt_task, *self._adopted]:
            if t is not None:
                t.cancel()
        await asyncio.gather(*self._adopted, return_exceptions=True)
        if self._adopt_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._adopt_task
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
        if self._client is not None:
            await self._client.aclose()
        if self._engine is not None:
            await self._engine.close()
            await self._engine.invoker.close()
        if self.store is not None:
            await self.store.close()
        self._engine = self._client = self._poller = self._poll_task = None
        self._heartbeat, self.store, self._adopt_task = None, None, None

    async def __aenter__(self) -> Embedded:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()
