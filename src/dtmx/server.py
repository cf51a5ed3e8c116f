"""Assembles a running server from settings: store, engine, service, poller, HTTP, gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dtmx import __version__
from dtmx.admin import mount as mount_admin
from dtmx.api.http import HttpApi
from dtmx.clock import Clock, GidFactory, SystemClock
from dtmx.core.branch_policy import BranchPolicy
from dtmx.core.timing import Timing, expire_every
from dtmx.discovery import Discovery
from dtmx.engine import Engine
from dtmx.heartbeat import Heartbeat
from dtmx.invoke.base import Invoker
from dtmx.invoke.http_invoker import HttpInvoker, Router
from dtmx.net.api_server import HttpServer, ServerLimits
from dtmx.poller import Poller
from dtmx.security import tls
from dtmx.security.auth import Authenticator
from dtmx.security.guard import Guard
from dtmx.security.netguard import AddressGuard
from dtmx.security.redact import AnswerCap
from dtmx.service import Service
from dtmx.settings import Settings, describe_store
from dtmx.stores import make_store
from dtmx.stores.base import Store
from dtmx.telemetry.wiring import Telemetry

log = logging.getLogger("dtmx.server")


@dataclass
class Server:
    """One dtmx server: store, engine, poller, HTTP and gRPC APIs, heartbeat and telemetry."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    store: Store | None = None
    service: Service | None = None
    poller: Poller | None = None
    _http: HttpServer | None = None
    _json_rpc: HttpServer | None = None
    _grpc: Any = None
    _poll_task: asyncio.Task[None] | None = None
    auth: Authenticator | None = None
    _auth_watch: asyncio.Task[None] | None = None
    _heartbeat: Heartbeat | None = None
    _extras: list[Any] = field(default_factory=list)
    telemetry: Telemetry | None = None
    _discovery: Discovery = field(default_factory=Discovery)

    async def start(self, *, reuse_port: bool = False) -> None:
        """Open the store, start the engine and poller, then listen; raises ConfigError before
        listening on bad settings.
        """
        s = self.settings
        tls.check(s.Tls)  # a missing certificate stops the start, before anything listens
        self.store = self.store or make_store(s)
        await self.store.open()
        store = self.store
        self.telemetry = tel = Telemetry(s, self.clock)
        policy = branch_policy(s)
        address_guard = AddressGuard(policy)
        grpc_invoker = _grpc_invoker(s, address_guard, self._discovery)
        http_invoker = HttpInvoker(
            guard=address_guard, max_response=s.Limits.MaxBranchResponseBytes,
            ssl_context=tls.branch_context(s.Tls))
        tel.metrics.count_branch_connections(http_invoker.client.stats)
        answers = s.BranchAnswers  # what of a branch's answer is kept, returned and logged
        invoker = tel.invoker(AnswerCap(Router(http_invoker, grpc_invoker),
                                        max_bytes=answers.MaxBytes, withhold=answers.Withhold))
        engine = Engine(
            store=tel.store(self.store, self.clock),
            invoker=invoker,
            clock=self.clock,
            timing=Timing(
                retry_interval=s.RetryInterval,
                max_retry_interval=s.MaxRetryInterval,
                request_timeout=s.RequestTimeout,
                timeout_to_fail=s.TimeoutToFail,
                lease=s.LeaseSeconds,
            ),
            observer=tel.observer,
            limits=s.Limits,
            owner_header=s.BranchOwnerHeader,
        )
        tel.metrics.gauge_runs_in_flight(lambda: engine.runs_in_flight)
        self.service = Service(engine=engine, new_gid=GidFactory(self.clock), policy=policy)
        self.poller = Poller(
            engine,
            interval=s.TransCronInterval,
            finished_ttl=float(s.Store.FinishedDataExpire),
            expire_every=expire_every(s.Store.FinishedDataExpire, s.TransCronInterval),
        )
        self.auth = Authenticator(s.Auth)
        if not self.auth.enabled:
            log.warning("Auth is not configured: every API route is open to anyone who can "
                        "reach the ports (as in DTM); see README, Security")
        guard = Guard(self.auth, self.clock.now)
        api = HttpApi(self.service, tel.metrics, timeout_to_fail=s.TimeoutToFail,
                      guard=guard, observer=tel.api, limits=s.Limits)
        api.health = self._healthy
        limits = ServerLimits(
            max_body=s.Limits.MaxBodyBytes,
            max_header=s.Limits.MaxHeaderBytes,
            max_pipelined=s.Limits.MaxPipelinedRequests,
            max_buffered=s.Limits.MaxBufferedAnswerBytes,
        )
        self._http = api.server(limits)
        mount_admin(self._http.routes, base_path=s.AdminBasePath, store=store, clock=self.clock,
                    guard=guard)
        await self._http.start(s.Host, s.HttpPort, reuse_port=reuse_port,
                               ssl=tls.server_context(s.Tls))
        if s.JsonRpcPort:  # same guard, observer and limits as the HTTP port's route
            self._json_rpc = api.server(limits, json_rpc_only=True)
            await self._json_rpc.start(s.Host, s.JsonRpcPort, reuse_port=reuse_port,
                                       ssl=tls.server_context(s.Tls))
        self._grpc = await _start_grpc(
            self.service, s, reuse_port,
            # observed outside the guard: refused calls count and are logged too
            lambda: [*tel.grpc_interceptors(), guard.grpc_interceptor()],
        )
        self._auth_watch = asyncio.create_task(self.auth.watch())
        self._extras = await _start_registration(s, self._discovery)
        self._poll_task = asyncio.create_task(self.poller.run())
        self._heartbeat = Heartbeat(
            store, self.clock, interval=s.HeartbeatInterval, http_port=s.HttpPort,
            grpc_port=s.GrpcPort if self._grpc else 0, in_flight=lambda: engine.runs_in_flight,
        )
        self._heartbeat.start()
        log.info(
            "dtmx %s started: store %s, http %s:%d, grpc %s, json-rpc port %s, pid %d,"
            " workers %d, tracing %s, alerts %s", __version__, describe_store(s), s.Host,
            s.HttpPort, s.GrpcPort if self._grpc else "off", s.JsonRpcPort or "off",
            os.getpid(), s.Workers,
            "on" if tel.tracing else "off", "on" if tel.alerts else "off",
        )

    async def _healthy(self) -> bool:
        if self.store is None:
            return False
        try:
            await self.store.ping()
        except Exception:
            return False
        return True

    def reload_tokens(self) -> None:
        """Read the API tokens again (SIGHUP): rotation without a restart."""
        if self.auth is not None:
            self.auth.reload()

    async def stop(self) -> None:
        """Stop the heartbeat and poller, stop listening, close the service (runs in flight),
        telemetry and the store.
        """
        if self._heartbeat:
            await self._heartbeat.stop()
        if self._auth_watch:
            self._auth_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._auth_watch
        for extra in self._extras:
            with contextlib.suppress(Exception):
                await extra.stop()
        if self.poller:
            await self.poller.stop()
        if self._poll_task:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
        if self._grpc is not None:
            await self._grpc.stop(grace=1)
        if self._http:
            await self._http.stop()
        if self._json_rpc:
            await self._json_rpc.stop()
        if self.service:
            await self.service.close()
            await self.service.engine.invoker.close()
        if self.telemetry:
            await self.telemetry.close()
        if self.store:
            await self.store.close()
        await self._discovery.stop()
        if self.telemetry:
            log.info("dtmx stopped (pid %d)", os.getpid())


def branch_policy(s: Settings) -> BranchPolicy:
    """The BranchPolicy block as rules (validated when the settings were loaded)."""
    p = s.BranchPolicy
    return BranchPolicy.build(schemes=p.Schemes, allow=p.Allow, deny=p.Deny,
                              deny_defaults=p.DenyDefaults)


def _grpc_invoker(s: Settings, guard: AddressGuard, discovery: Discovery) -> Invoker | None:
    try:
        from dtmx.invoke.grpc import GrpcInvoker
    except ImportError:  # grpcio is an optional server dependency
        return None
    # etcd://host:2379/<key>/pkg.Service/Method branch URLs resolve through etcd
    # (and every target, etcd's answers too, is judged by BranchPolicy before it is dialled)
    return GrpcInvoker(dtm_address=f"127.0.0.1:{s.GrpcPort}",
                       resolver=guard.grpc_resolver(discovery.resolve),
                       max_response=s.Limits.MaxBranchResponseBytes)


async def _start_grpc(
    service: Service, s: Settings, reuse_port: bool, interceptors: Callable[[], list[Any]]
) -> Any:
    if not s.GrpcPort:
        return None
    try:
        from dtmx.api.grpc_api import start_grpc_server
    except ImportError:
        log.warning("gRPC API not available (grpcio missing)")
        return None
    # with --workers every process binds the same ports (SO_REUSEPORT), as the HTTP site does
    options = {"grpc.so_reuseport": 1} if reuse_port else None
    return await start_grpc_server(service, s.Host, s.GrpcPort, options=options,
                                   interceptors=interceptors(), limits=s.Limits,
                                   credentials=tls.grpc_credentials(s.Tls))


async def _start_registration(s: Settings, discovery: Discovery) -> list[Any]:
    """Register this server in etcd when MicroService names an etcd target."""
    if not s.MicroService.Target.startswith("etcd://"):
        return []
    from dtmx.discovery import register_from_settings

    return [await register_from_settings(s, discovery)]


async def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Run until SIGTERM/SIGINT."""
    server = Server(settings)
    try:
        await server.start(reuse_port=reuse_port)
    except BaseException:
        await server.stop()  # a half-started server must not keep the process alive
        raise
    # What exists now (modules, settings, the server's own objects) lives as long as the
    # process: kept out of the collector's full passes, which otherwise walk all of it each
    # time long-lived objects pile up (a 1,000-step saga's rows: ~4 ms per saga).
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_tokens)
    try:
        await stop.wait()
    finally:
        await server.stop()
