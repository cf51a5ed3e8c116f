"""Fixtures of the end-to-end gRPC tests: a real `dtmx serve`, an in-process gRPC busi and
a stub of our dtmgimp proto on the server's gRPC port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from dtmx.api.proto import dtmgimp_pb2_grpc
from tests.support.grpc_busi import GrpcBusi
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = ServerProcess().start()
    yield s
    s.stop()


@pytest.fixture
async def busi() -> AsyncIterator[GrpcBusi]:
    async with GrpcBusi() as b:
        yield b


@pytest.fixture
async def dtm(server: ServerProcess) -> AsyncIterator[dtmgimp_pb2_grpc.DtmStub]:
    async with grpc.aio.insecure_channel(server.grpc_target) as ch:
        yield dtmgimp_pb2_grpc.DtmStub(ch)
