"""user rpc: saveUser / saveUserRevert (a saga step and its compensation), getUser (cached).

Both saga methods run their SQL through the dtmx barrier inside one local transaction, so a
retried or duplicated delivery inserts the user once, a compensation that arrives before (or
without) its action does nothing, and an action arriving after its compensation is ignored.
The user id comes in the request: user-api allocates it before the saga starts, so the score
step can be given the same id (see mall/README.md).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace

from dtmx.client import Failure
from mall.common.cache import Cache, NotFound, cached, make_cache
from mall.common.config import UserConf
from mall.common.db import Database, Dialect, DuplicateKey
from mall.common.rpc import RpcError, barrier_of, rpc_method
from mall.common.server import RpcServer
from mall.proto import user_pb2, user_pb2_grpc

log = logging.getLogger("mall.user")

#: go-zero's cache key convention for a table's primary key: cache:<table>:id:<id>.
CACHE_USER_ID_PREFIX = "cache:user:id:"

MAX_NAME = 64
GENDERS = ("male", "female", "other", "")

DDL: dict[Dialect, list[str]] = {
    Dialect.MYSQL: [
        "CREATE TABLE IF NOT EXISTS `user` ("
        " `id` bigint NOT NULL,"
        " `name` varchar(64) NOT NULL,"
        " `gender` varchar(16) NOT NULL DEFAULT '',"
        " `create_time` bigint NOT NULL DEFAULT 0,"
        " PRIMARY KEY (`id`),"
        " UNIQUE KEY `uniq_name` (`name`)"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    ],
    Dialect.SQLITE: [
        "CREATE TABLE IF NOT EXISTS `user` ("
        " `id` INTEGER PRIMARY KEY,"
        " `name` TEXT NOT NULL UNIQUE,"
        " `gender` TEXT NOT NULL DEFAULT '',"
        " `create_time` INTEGER NOT NULL DEFAULT 0)"
    ],
}

_COLUMNS = "`id`, `name`, `gender`, `create_time`"


def cache_key(user_id: int) -> str:
    """Redis key of a user row."""
    return f"{CACHE_USER_ID_PREFIX}{user_id}"


def _row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": int(row[0]), "name": row[1], "gender": row[2], "create_time": int(row[3])}


def _response(u: dict[str, Any]) -> user_pb2.UserResponse:
    return user_pb2.UserResponse(
        id=str(u["id"]), name=u["name"], gender=u["gender"], createTime=u["create_time"]
    )


def check_new_user(req: user_pb2.UserRequest) -> None:
    """Input a saga step can never succeed with: refuse it (Failure rolls the saga back)."""
    if req.id <= 0:
        raise Failure("user id must be positive")
    if not req.name.strip() or len(req.name) > MAX_NAME:
        raise Failure(f"name must be 1..{MAX_NAME} characters")
    if req.gender not in GENDERS:
        raise Failure(f"gender must be one of {', '.join(g for g in GENDERS if g)}")


class UserService(user_pb2_grpc.UserServicer):
    """The user rpc servicer."""

    def __init__(self, conf: UserConf, db: Database, cache: Cache) -> None:
        self.conf = conf
        self.db = db
        self.cache = cache
        self.tracer = trace.get_tracer("mall.user.rpc")

    async def _find_by_id(self, user_id: int) -> dict[str, Any]:
        async def load() -> dict[str, Any] | None:
            rows = await self.db.query(f"SELECT {_COLUMNS} FROM `user` WHERE `id` = ?", (user_id,))
            return _row_dict(rows[0]) if rows else None

        return await cached(
            self.cache,
            cache_key(user_id),
            load,
            expire=self.conf.CacheExpire,
            not_found_expire=self.conf.CacheNotFoundExpire,
        )

    @rpc_method
    async def getUser(
        self, request: user_pb2.IdRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.UserResponse:
        """FindById with cache-aside."""
        try:
            user_id = int(request.id)
        except ValueError:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "id must be an integer") from None
        try:
            return _response(await self._find_by_id(user_id))
        except NotFound:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"user {user_id} not found") from None

    @rpc_method
    async def getUserByName(
        self, request: user_pb2.NameRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.UserResponse:
        """Look a user up by name (login)."""
        rows = await self.db.query(
            f"SELECT {_COLUMNS} FROM `user` WHERE `name` = ?", (request.name,)
        )
        if not rows:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"user {request.name!r} not found")
        return _response(_row_dict(rows[0]))

    @rpc_method
    async def saveUser(
        self, request: user_pb2.UserRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.UserResponse:
        """Saga action: insert the user (once, whatever the deliveries)."""
        check_new_user(request)
        barrier = barrier_of(context, self.db)
        now = int(time.time())

        async def insert(conn: Any) -> None:
            try:
                await self.db.execute(
                    conn,
                    f"INSERT INTO `user` ({_COLUMNS}) VALUES (?, ?, ?, ?)",
                    (request.id, request.name, request.gender, now),
                )
            except DuplicateKey:
                raise Failure(f"user name {request.name!r} is already taken") from None

        async with self.db.connection() as conn:
            await barrier.call(conn, insert)
        # After the commit: a reader can no longer repopulate the key with the old state
        # (e.g. the not-found placeholder cached by an earlier lookup of this id).
        await self.cache.delete(cache_key(request.id))
        return user_pb2.UserResponse(
            id=str(request.id), name=request.name, gender=request.gender, createTime=now
        )

    @rpc_method
    async def saveUserRevert(
        self, request: user_pb2.UserRequest, context: grpc.aio.ServicerContext
    ) -> user_pb2.UserResponse:
        """Saga compensation: delete the user saveUser inserted (nothing if it never did)."""
        barrier = barrier_of(context, self.db)

        async def delete(conn: Any) -> None:
            await self.db.execute(conn, "DELETE FROM `user` WHERE `id` = ?", (request.id,))

        async with self.db.connection() as conn:
            await barrier.call(conn, delete)
        await self.cache.delete(cache_key(request.id))
        return user_pb2.UserResponse(id=str(request.id), name=request.name)


async def build(conf: UserConf, **server_kwargs: Any) -> RpcServer:
    """The user rpc server (not started): database, cache, servicer."""
    db = await Database.open(conf, DDL)
    cache = make_cache(conf.CacheRedis)
    service = UserService(conf, db, cache)

    async def close() -> None:
        await cache.close()
        await db.close()

    return RpcServer(
        conf,
        lambda server: user_pb2_grpc.add_UserServicer_to_server(service, server),  # type: ignore[no-untyped-call]
        on_close=close,
        **server_kwargs,
    )
