"""user-api's logic, free of HTTP: register (a gRPC saga on dtmx), login (JWT), user info.

Outcomes are values or `ApiError(status, message)`; the web layer only renders them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import jwt

from dtmx.client import DtmClient, DtmError, StillRunning, TransactionFailed
from dtmx.client.grpc import GrpcTransport
from mall.common.config import ConfigError, UserApiConf
from mall.common.discovery import Balancer, Discovery, EtcdDiscovery, NoInstance
from mall.common.telemetry import current_gid, outgoing_metadata, traceparent_headers
from mall.proto import user_pb2, user_pb2_grpc, user_score_pb2, user_score_pb2_grpc
from mall.userapi.ids import Snowflake

log = logging.getLogger("mall.userapi")

MAX_NAME = 64
MIN_SECRET = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
GENDERS = ("male", "female", "other")
USER_SERVICE = "user.User"
SCORE_SERVICE = "score.UserScore"
DTM_SERVICE_KEY = "dtmservice"
_FAILED_PREFIX = "return failed: "


@dataclass
class ApiError(Exception):
    """An answer other than 200: HTTP status, message, optional extra fields."""

    status: int
    message: str
    extra: dict[str, Any] = field(default_factory=dict)


def validate_register(body: Any) -> tuple[str, str]:
    """(name, gender) from a register body; ApiError 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object with name and gender")
    name, gender = body.get("name"), body.get("gender")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "name is required")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise ApiError(400, f"name must be at most {MAX_NAME} characters")
    if not isinstance(gender, str) or gender not in GENDERS:
        raise ApiError(400, f"gender is required, one of {', '.join(GENDERS)}")
    return name, gender


def refusal(message: str) -> ApiError:
    """The 4xx for a saga that rolled back, from dtmx's rollback reason."""
    reason = message.split(_FAILED_PREFIX, 1)[-1]
    if "already taken" in reason:
        return ApiError(409, reason)
    return ApiError(422, f"registration refused: {reason}")


class Channels:
    """One grpc.aio channel per address, opened lazily in the running loop."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        """The channel to `address`."""
        ch = self._channels.get(address)
        if ch is None:
            ch = grpc.aio.insecure_channel(address)
            self._channels[address] = ch
        return ch

    async def close(self) -> None:
        """Close every channel."""
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            await ch.close()


class UserApiLogic:
    """Registration, login and user info on top of the two rpc services and dtmx."""

    def __init__(self, conf: UserApiConf, *, discovery: Discovery | None = None) -> None:
        if len(conf.Auth.Secret.encode()) < MIN_SECRET:
            raise ConfigError(f"Auth.Secret must be at least {MIN_SECRET} bytes (HS256 key)")
        self.conf = conf
        self.users = Balancer(conf.UserRpc, discovery)
        self.scores = Balancer(conf.UserScoreRpc, discovery)
        self.channels = Channels()
        self.ids = Snowflake()
        self._dtm_discovery: Discovery | None = None
        self._dtm: DtmClient | None = None
        self._dtm_address = ""

    # --- plumbing ------------------------------------------------------------------------

    async def _dtm_client(self) -> DtmClient:
        """The dtmx client; an etcd DtmServer is looked up under `dtmservice` on each use."""
        target = self.conf.DtmServer
        address = target
        if target.startswith("etcd://"):
            hosts, _, key = target.removeprefix("etcd://").partition("/")
            if self._dtm_discovery is None:
                self._dtm_discovery = EtcdDiscovery(hosts.split(","))
            found = await self._dtm_discovery.resolve(key or DTM_SERVICE_KEY)
            if not found:
                raise ApiError(503, f"no dtmx server registered under {key or DTM_SERVICE_KEY}")
            address = found[0]
        if self._dtm is None or address != self._dtm_address:
            if self._dtm is not None:
                await self._dtm.aclose()
            transport = GrpcTransport(address, timeout=self.conf.RegisterTimeout)
            self._dtm = DtmClient(transport=transport)
            self._dtm_address = address
        return self._dtm

    async def _branch_base(self, balancer: Balancer) -> str:
        if self.conf.BranchTarget == "etcd":
            return balancer.etcd_target
        return await self._pick(balancer)

    async def _pick(self, balancer: Balancer) -> str:
        """An instance of the service; 503 when none is registered or discovery fails."""
        try:
            return await balancer.pick()
        except NoInstance as e:
            raise ApiError(503, f"service unavailable: {e}") from None
        except Exception as e:  # etcd unreachable and nothing cached yet
            raise ApiError(503, f"service discovery failed for {balancer.key}: {e}") from None

    def _timeout(self, balancer: Balancer) -> float:
        return balancer.conf.Timeout / 1000

    async def _user_stub(self) -> user_pb2_grpc.UserStub:
        return user_pb2_grpc.UserStub(self.channels.get(await self._pick(self.users)))  # type: ignore[no-untyped-call]

    async def _score_stub(self) -> user_score_pb2_grpc.UserScoreStub:
        return user_score_pb2_grpc.UserScoreStub(self.channels.get(await self._pick(self.scores)))  # type: ignore[no-untyped-call]

    # --- register ------------------------------------------------------------------------

    async def register(self, body: Any) -> dict[str, Any]:
        """Create the user and grant the points in one saga; all or nothing."""
        name, gender = validate_register(body)
        # A fast, friendly 409 for the common case; the unique key settles races.
        if await self._find_by_name(name) is not None:
            raise ApiError(409, f"user name {name!r} is already taken")
        user_id = self.ids.next_id()
        score = self.conf.RegisterScore
        try:
            client = await self._dtm_client()
            gid = await client.new_gid()
        except DtmError as e:
            raise ApiError(503, f"transaction manager unavailable: {e.message}") from None
        current_gid.set(gid)
        user_base = await self._branch_base(self.users)
        score_base = await self._branch_base(self.scores)
        saga = client.saga(gid)
        # gRPC branches take the serialized protobuf as it is (bytes: BinPayloads)
        saga.add(
            f"{user_base}/{USER_SERVICE}/saveUser",
            f"{user_base}/{USER_SERVICE}/saveUserRevert",
            user_pb2.UserRequest(id=user_id, name=name, gender=gender).SerializeToString(),
        )
        saga.add(
            f"{score_base}/{SCORE_SERVICE}/saveUserScore",
            f"{score_base}/{SCORE_SERVICE}/saveUserScoreCallback",
            user_score_pb2.UserScoreRequest(userId=user_id, score=score).SerializeToString(),
        )
        saga.wait_result = True
        # dtmx sends branch headers as gRPC metadata: the rpc services continue this trace.
        saga.branch_headers = traceparent_headers()
        log.info("register %r as %d: submitting saga", name, user_id)
        try:
            await asyncio.wait_for(saga.submit(), self.conf.RegisterTimeout)
        except StillRunning as e:
            raise self._pending(gid, user_id, e.message) from None
        except TransactionFailed as e:
            log.info("register %r refused: %s", name, e.message)
            raise refusal(e.message) from None
        except (DtmError, TimeoutError) as e:
            raise self._pending(gid, user_id, str(e) or type(e).__name__) from None
        log.info("register %r as %d: done", name, user_id)
        return {"id": str(user_id), "name": name, "gender": gender, "score": score, "gid": gid}

    def _pending(self, gid: str, user_id: int, detail: str) -> ApiError:
        log.warning("register %d not finished in time: %s", user_id, detail)
        return ApiError(
            202,
            "registration pending: a service is not answering; the transaction manager keeps "
            "retrying and the registration will complete or be rolled back entirely",
            {"gid": gid, "id": str(user_id)},
        )

    # --- lookups ---------------------------------------------------------------------------

    async def _find_by_name(self, name: str) -> user_pb2.UserResponse | None:
        stub = await self._user_stub()
        try:
            reply: user_pb2.UserResponse = await stub.getUserByName(
                user_pb2.NameRequest(name=name),
                timeout=self._timeout(self.users),
                metadata=outgoing_metadata(),
            )
            return reply
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise ApiError(503, f"user service: {e.code().name} {e.details() or ''}") from None

    async def login(self, body: Any) -> dict[str, Any]:
        """A JWT for an existing user: body {"name": ...}."""
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise ApiError(400, "name is required")
        user = await self._find_by_name(body["name"].strip())
        if user is None:
            raise ApiError(401, "unknown user")
        now = int(time.time())
        claims = {"iat": now, "exp": now + self.conf.Auth.ExpireIn, "userId": int(user.id)}
        token = jwt.encode(claims, self.conf.Auth.Secret, algorithm="HS256")
        return {"token": token, "expire": now + self.conf.Auth.ExpireIn}

    def user_id_from(self, authorization: str | None) -> int:
        """The userId of a valid `Bearer <jwt>`; ApiError 401 otherwise."""
        if not authorization:
            raise ApiError(401, "missing Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Authorization must be Bearer <token>")
        try:
            claims = jwt.decode(
                token.strip(), self.conf.Auth.Secret, algorithms=["HS256"],
                options={"require": ["exp", "iat"]},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "token expired") from None
        except jwt.InvalidTokenError as e:
            raise ApiError(401, f"invalid token: {e}") from None
        user_id = claims.get("userId")
        if not isinstance(user_id, int) or user_id <= 0:
            raise ApiError(401, "invalid token: no userId")
        return user_id

    async def info(self, user_id: int) -> dict[str, Any]:
        """The user (cached by user rpc) and their points."""
        try:
            stub = await self._user_stub()
            user = await stub.getUser(
                user_pb2.IdRequest(id=str(user_id)),
                timeout=self._timeout(self.users),
                metadata=outgoing_metadata(),
            )
            scores = await self._score_stub()
            points = await scores.getUserScore(
                user_score_pb2.UserScoreRequest(userId=user_id),
                timeout=self._timeout(self.scores),
                metadata=outgoing_metadata(),
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise ApiError(404, f"user {user_id} not found") from None
            raise ApiError(503, f"backend: {e.code().name} {e.details() or ''}") from None
        return {
            "id": user.id, "name": user.name, "gender": user.gender,
            "createTime": user.createTime, "score": points.score,
        }  # fmt: skip

    async def close(self) -> None:
        """Close clients and channels."""
        if self._dtm is not None:
            await self._dtm.aclose()
        if self._dtm_discovery is not None:
            await self._dtm_discovery.close()
        await self.channels.close()
        await self.users.close()
        await self.scores.close()
