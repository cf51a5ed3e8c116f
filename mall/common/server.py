"""Running an rpc service: a grpc.aio server on ListenOn, registered in discovery.

`RpcServer` is what tests start in-process (start/stop, the real port); `run_until_signal`
is what a service's `__main__` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import grpc.aio

from mall.common.config import RpcServerConf, host_port
from mall.common.discovery import (
    Discovery,
    EtcdDiscovery,
    Registration,
    StaticDiscovery,
    advertised,
)

log = logging.getLogger("mall.server")

AddServicer = Callable[[grpc.aio.Server], None]


def discovery_for(conf: RpcServerConf) -> Discovery:
    """etcd when the config has an Etcd block, else static (embedded mode)."""
    if conf.Etcd is not None and conf.Etcd.Hosts and conf.Etcd.Key:
        return EtcdDiscovery(conf.Etcd.Hosts)
    return StaticDiscovery()


class RpcServer:
    """One rpc service instance: gRPC server, discovery registration, cleanup callbacks."""

    def __init__(
        self,
        conf: RpcServerConf,
        add: AddServicer,
        *,
        discovery: Discovery | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.conf = conf
        self._add = add
        self.discovery = discovery or discovery_for(conf)
        self._on_close = on_close
        self._server: grpc.aio.Server | None = None
        self._registration: Registration | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """host:port clients dial (the bound port, even when ListenOn asked for port 0)."""
        host, _ = host_port(self.conf.ListenOn)
        return advertised(f"{host}:{self.port}")

    async def start(self) -> RpcServer:
        """Listen, then announce the instance under Etcd.Key."""
        self._server = grpc.aio.server()
        self._add(self._server)
        host, port = host_port(self.conf.ListenOn)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        if not self.port:
            raise OSError(f"{self.conf.Name}: cannot listen on {self.conf.ListenOn}")
        await self._server.start()
        if self.conf.Etcd is not None and self.conf.Etcd.Key:
            self._registration = await self.discovery.register(self.conf.Etcd.Key, self.address)
        log.info("%s listening on %s", self.conf.Name, self.address)
        return self

    async def stop(self, grace: float = 1.0) -> None:
        """Withdraw from discovery first (no new calls), then stop serving and close."""
        if self._registration is not None:
            with contextlib.suppress(Exception):
                await self._registration.stop()
            self._registration = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        with contextlib.suppress(Exception):
            await self.discovery.close()
        if self._on_close is not None:
            await self._on_close()
            self._on_close = None


async def run_until_signal(start: Callable[[], Awaitable[Any]]) -> None:
    """Start something with `.stop()` and run until SIGINT/SIGTERM."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    service = await start()
    try:
        await stopping.wait()
    finally:
        await service.stop()
