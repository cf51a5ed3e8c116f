"""Calling branches over gRPC, as DTM does: raw payload bytes, dtm-* metadata, status codes.

A gRPC branch URL is `host:port/pkg.Service/Method`. The payload stored for the branch is
already the serialized request message, so the call passes bytes through untouched and
ignores the reply body; only the status code matters:

    OK -> success, ABORTED -> failure, FAILED_PRECONDITION -> ongoing, anything else -> error

Channels are kept open and shared per target, because opening an HTTP/2 connection per
branch call would dominate the cost of a saga step. A reply is read up to `max_response`
bytes (Limits.MaxBranchResponseBytes, not gRPC's 4 MiB default); a larger one is an error
saying so (gRPC refuses the message from its length prefix, before holding it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from dtmx.core.limits import Limits
from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall, CallResult

log = logging.getLogger(__name__)

Resolver = Callable[[str], Awaitable[str]]
"""Turns the target part of a branch URL into a dialable `host:port` (e.g. from etcd)."""

# Before v1.10 DTM clients answered "ongoing" as ABORTED with this exact message.
_LEGACY_ONGOING = "ONGOING"

# grpc's default reconnect backoff grows to 120 s, during which calls on the channel fail
# fast; a branch server that comes back should be reachable on the next retry instead.
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 3000),
)


# How gRPC's C core says this client refused a received message over
# max_receive_message_length (a branch server's refusal of our request says "SERVER: ").
_TOO_LARGE = re.compile(r"(?<!SERVER: )Received message larger than max \((\d+) vs\. (\d+)\)")


async def identity_resolver(target: str) -> str:
    """The default resolver: the URL already names `host:port`."""
    return target


@dataclass(slots=True, frozen=True)
class GrpcUrl:
    """A branch URL split into where to dial and which method to call."""

    target: str
    method: str  # "/pkg.Service/Method"


def parse_grpc_url(url: str) -> GrpcUrl:
    """Split `host:port/pkg.Service/Method` (or `scheme://.../pkg.Service/Method`).

    The method is always the last two path segments, so a resolver-style target such as
    `etcd://host:2379/service-key` keeps its own slashes. Raises ValueError when malformed.
    """
    parts = url.rsplit("/", 2)
    if len(parts) != 3 or not all(parts) or parts[0].endswith(":/"):
        raise ValueError(f"bad gRPC branch url {url!r}, expected host:port/pkg.Service/Method")
    target, service, method = parts
    return GrpcUrl(target=target, method=f"/{service}/{method}")


def branch_metadata(call: BranchCall, dtm_address: str) -> tuple[tuple[str, str | bytes], ...]:
    """The metadata DTM branches read (dtm-gid, ...) followed by the branch headers."""
    md: list[tuple[str, str | bytes]] = [
        ("dtm-gid", call.gid),
        ("dtm-trans_type", call.trans_type),
        ("dtm-branch_id", call.branch_id),
        ("dtm-op", call.op),
        ("dtm-dtm", dtm_address),
    ]
    for k, v in call.headers.items():
        key = k.lower()  # gRPC metadata keys must be lower case
        # keys ending in -bin carry binary values by gRPC's convention
        md.append((key, v.encode() if key.endswith("-bin") else v))
    return tuple(md)


def outcome_of(code: grpc.StatusCode, details: str | None) -> CallResult:
    """Map a gRPC status to what the engine needs to know."""
    if code == grpc.StatusCode.OK:
        return CallResult(Outcome.SUCCESS)
    msg = details or ""
    if code == grpc.StatusCode.ABORTED:
        if msg == _LEGACY_ONGOING:
            return CallResult(Outcome.ONGOING, msg)
        return CallResult(Outcome.FAILURE, msg)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return CallResult(Outcome.ONGOING, msg)
    return CallResult(Outcome.ERROR, f"{code.name}: {msg}" if msg else code.name)


def _pass_bytes(data: bytes) -> bytes:
    return data


class GrpcInvoker:
    """An `Invoker` for gRPC branch URLs.

    `dtm_address` is this server's own gRPC address, sent as `dtm-dtm` so a branch (a tcc
    try, a workflow) can call back. `resolver` maps a URL's target to `host:port`; the
    default takes it literally, a service-discovery resolver (etcd) can be injected.
    """

    def __init__(
        self,
        *,
        dtm_address: str = "",
        resolver: Resolver = identity_resolver,
        channel_options: Mapping[str, Any] | None = None,
        max_response: int = Limits().MaxBranchResponseBytes,
    ) -> None:
        self._dtm_address = dtm_address
        self._resolver = resolver
        self._max_response = max_response
        opts = dict(DEFAULT_CHANNEL_OPTIONS)
        opts["grpc.max_receive_message_length"] = max_response
        opts.update(channel_options or {})
        self._channel_options = tuple(opts.items())
        self._channels: dict[str, grpc.aio.Channel] = {}

    @property
    def channel_count(self) -> int:
        """How many targets have an open channel (channels are reused across calls)."""
        return len(self._channels)

    def _channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = grpc.aio.insecure_channel(address, options=self._channel_options)
            self._channels[address] = ch
        return ch

    async def call(self, call: BranchCall) -> CallResult:
        """Invoke the branch; never raises."""
        if not call.url:  # DTM's rule: a step without a URL succeeds without a call
            return CallResult(Outcome.SUCCESS)
        try:
            url = parse_grpc_url(call.url)
            address = await self._resolver(url.target)
            method = self._channel(address).unary_unary(
                url.method,
                request_serializer=_pass_bytes,
                response_deserializer=_pass_bytes,
            )
            await method(
                call.payload,
                metadata=branch_metadata(call, self._dtm_address),
                timeout=call.timeout if call.timeout > 0 else None,
            )
        except grpc.aio.AioRpcError as e:
            result = self._too_large(e) or outcome_of(e.code(), e.details())
            if result.outcome is Outcome.ERROR:
                log.info("grpc branch %s %s/%s: %s", call.url, call.gid, call.branch_id,
                         result.detail)
            return result
        except Exception as e:  # resolver, bad URL or metadata: retried like any error
            log.warning("grpc branch %s %s/%s failed: %r", call.url, call.gid, call.branch_id, e)
            return CallResult(Outcome.ERROR, f"{type(e).__name__}: {e}")
        return CallResult(Outcome.SUCCESS)

    def _too_large(self, e: grpc.aio.AioRpcError) -> CallResult | None:
        """The error of a reply over our own limit (None for any other error)."""
        m = _TOO_LARGE.search(e.details() or "")
        if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or m is None \
                or int(m[2]) != self._max_response:
            return None
        return CallResult(Outcome.ERROR, f"ResponseTooLarge: branch response larger than"
                                         f" {self._max_response} bytes ({m[1]} bytes)")

    async def close(self) -> None:
        """Close every pooled channel."""
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            try:
                await ch.close()
            except Exception:  # closing is best effort at shutdown
                log.debug("closing grpc channel failed", exc_info=True)
