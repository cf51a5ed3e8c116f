"""A gRPC business service for tests: answers any method, with switchable results.

Every unary method of any service name is accepted (the handler is generic), so a test can
point saga/tcc/msg steps at `busi.url("TransIn")`, `busi.url("Anything")`, ... The result of
a method is OK unless the test switched it with `set_result`; every call is recorded with its
metadata, raw payload and remaining deadline.

In-process use (inside an async test):

    async with GrpcBusi() as busi:
        busi.set_result("TransOut", grpc.StatusCode.ABORTED)
        ... busi.url("TransOut") ...

As a process: `python -m tests.support.grpc_busi --port 50051` (results are all OK).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from tests.support.proto import busi_pb2
from tests.support.util import free_port

SERVICE = "dtmxbusi.Busi"
OK = grpc.StatusCode.OK


@dataclass(slots=True)
class BusiCall:
    """One recorded call."""

    method: str  # full method, "/dtmxbusi.Busi/TransIn"
    payload: bytes
    metadata: dict[str, str]
    time_remaining: float | None
    at: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        """The bare method name, e.g. "TransIn"."""
        return self.method.rsplit("/", 1)[-1]

    def request(self) -> busi_pb2.BusiReq:
        """The payload decoded as the test proto's request message."""
        return busi_pb2.BusiReq.FromString(self.payload)


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, busi: GrpcBusi) -> None:
        self._busi = busi

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method  # type: ignore[attr-defined]

        async def behave(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            return await self._busi._handle(method, request, context)

        # no (de)serializers: the handler sees and returns raw bytes
        return grpc.unary_unary_rpc_method_handler(behave)


class GrpcBusi:
    """The test business server (see module docstring)."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        self.calls: list[BusiCall] = []
        self._results: dict[str, list[tuple[grpc.StatusCode, str]]] = {}
        self._replies: dict[str, bytes] = {}
        self._delays: dict[str, float] = {}
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, method: str, service: str = SERVICE) -> str:
        """A DTM gRPC branch URL for `method` on this server."""
        return f"{self.target}/{service}/{method}"

    def set_result(self, method: str, *codes: grpc.StatusCode, message: str = "") -> None:
        """Answer `method` with these codes in turn; the last one sticks (none: back to OK)."""
        self._results[method] = [(c, message or c.name) for c in codes]

    def set_reply(self, method: str, reply: bytes) -> None:
        """Answer `method` with these raw bytes instead of a BusiReply."""
        self._replies[method] = reply

    def set_delay(self, method: str, seconds: float) -> None:
        """Sleep before answering `method` (for deadline tests)."""
        self._delays[method] = seconds

    def reset(self) -> None:
        self.calls.clear()
        self._results.clear()
        self._delays.clear()
        self._replies.clear()

    def calls_of(self, method: str) -> list[BusiCall]:
        return [c for c in self.calls if c.name == method]

    def names(self) -> list[str]:
        """Method names in call order."""
        return [c.name for c in self.calls]

    def _next_result(self, name: str) -> tuple[grpc.StatusCode, str]:
        queue = self._results.get(name)
        if not queue:
            return OK, ""
        return queue.pop(0) if len(queue) > 1 else queue[0]

    async def _handle(
        self, method: str, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        md: dict[str, str] = {}
        for k, v in context.invocation_metadata() or ():
            md[k] = v.decode() if isinstance(v, bytes) else v
        call = BusiCall(method, request, md, context.time_remaining())
        self.calls.append(call)
        delay = self._delays.get(call.name)
        if delay:
            await asyncio.sleep(delay)
        code, message = self._next_result(call.name)
        if code != OK:
            await context.abort(code, message)
        reply = self._replies.get(call.name)
        return reply if reply is not None else busi_pb2.BusiReply(
            Message="SUCCESS").SerializeToString()

    async def start(self) -> GrpcBusi:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_Handler(self),))
        bound = server.add_insecure_port(self.target)
        if not bound:
            raise RuntimeError(f"cannot bind {self.target}")
        await server.start()
        self._server = server
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    async def __aenter__(self) -> GrpcBusi:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _serve(port: int) -> None:
    busi = await GrpcBusi(port=port, host="0.0.0.0").start()
    print(f"grpc busi listening on {busi.target}", flush=True)
    assert busi._server is not None
    await busi._server.wait_for_termination()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    asyncio.run(_serve(args.port or free_port()))


if __name__ == "__main__":
    main()
