"""user-score rpc: saveUserScore / saveUserScoreCallback (saga step and compensation).

Points come out of a budget (`ScoreBudget` in userscore.yaml): `score_budget.granted` counts
what has been handed out, and a grant that would pass the budget is refused with `Failure`
(gRPC ABORTED), which makes dtmx roll the whole registration back. The budget row is updated
with a guarded UPDATE in the same local transaction as the barrier and the `user_score` row,
so concurrent grants cannot overspend it and a compensation gives the points back.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace

from dtmx.client import Failure
from mall.common.config import UserScoreConf
from mall.common.db import Database, Dialect
from mall.common.rpc import RpcError, barrier_of, rpc_method
from mall.common.server import RpcServer
from mall.proto import user_score_pb2, user_score_pb2_grpc

log = logging.getLogger("mall.userscore")

_BUDGET_ID = 1

DDL: dict[Dialect, list[str]] = {
    Dialect.MYSQL: [
        # The seed's table, as is.
        "CREATE TABLE IF NOT EXISTS `user_score` ("
        " `id` bigint(11) unsigned NOT NULL AUTO_INCREMENT,"
        " `user_id` bigint(11) NOT NULL DEFAULT '0',"
        " `score` int(11) NOT NULL DEFAULT '0',"
        " PRIMARY KEY (`id`),"
        " KEY `idx_user_id` (`user_id`)"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8",
        "CREATE TABLE IF NOT EXISTS `score_budget` ("
        " `id` int NOT NULL, `granted` bigint NOT NULL DEFAULT 0, PRIMARY KEY (`id`)"
        ") ENGINE=InnoDB",
        # (not INSERT IGNORE: its duplicate-key warning would be logged at every start)
        f"INSERT INTO `score_budget` (`id`, `granted`) SELECT {_BUDGET_ID}, 0 FROM DUAL"
        f" WHERE NOT EXISTS (SELECT 1 FROM `score_budget` WHERE `id` = {_BUDGET_ID})",
    ],
    Dialect.SQLITE: [
        "CREATE TABLE IF NOT EXISTS `user_score` ("
        " `id` INTEGER PRIMARY KEY AUTOINCREMENT,"
        " `user_id` INTEGER NOT NULL DEFAULT 0,"
        " `score` INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX IF NOT EXISTS `idx_user_id` ON `user_score` (`user_id`)",
        "CREATE TABLE IF NOT EXISTS `score_budget` ("
        " `id` INTEGER PRIMARY KEY, `granted` INTEGER NOT NULL DEFAULT 0)",
        f"INSERT OR IGNORE INTO `score_budget` (`id`, `granted`) VALUES ({_BUDGET_ID}, 0)",
    ],
}


def check_grant(req: user_score_pb2.UserScoreRequest) -> None:
    """A grant that can never succeed is refused (Failure rolls the saga back)."""
    if req.userId <= 0:
        raise Failure("userId must be positive")
    if req.score <= 0:
        raise Failure("score must be positive")


class UserScoreService(user_score_pb2_grpc.UserScoreServicer):
    """The user-score rpc servicer."""

    def __init__(self, conf: UserScoreConf, db: Database) -> None:
        self.conf = conf
        self.db = db
        self.tracer = trace.get_tracer("mall.score.rpc")

    async def _grant(self, conn: Any, user_id: int, score: int) -> None:
        taken = await self.db.execute(
            conn,
            "UPDATE `score_budget` SET `granted` = `granted` + ?"
            " WHERE `id` = ? AND `granted` + ? <= ?",
            (score, _BUDGET_ID, score, self.conf.ScoreBudget),
        )
        if not taken:
            row = await self.db.fetchone(
                conn, "SELECT `granted` FROM `score_budget` WHERE `id` = ?", (_BUDGET_ID,)
            )
            left = max(0, self.conf.ScoreBudget - int(row[0] if row else 0))
            raise Failure(
                f"points budget exhausted: cannot grant {score} points, {left} left"
            )
        await self.db.execute(
            conn, "INSERT INTO `user_score` (`user_id`, `score`) VALUES (?, ?)", (user_id, score)
        )

    async def _take_back(self, conn: Any, user_id: int) -> None:
        row = await self.db.fetchone(
            conn, "SELECT COALESCE(SUM(`score`), 0) FROM `user_score` WHERE `user_id` = ?",
            (user_id,),
        )  # fmt: skip
        total = int(row[0]) if row else 0
        await self.db.execute(conn, "DELETE FROM `user_score` WHERE `user_id` = ?", (user_id,))
        if total:
            await self.db.execute(
                conn,
                "UPDATE `score_budget` SET `granted` = `granted` - ? WHERE `id` = ?",
                (total, _BUDGET_ID),
            )

    @rpc_method
    async def saveUserScore(
        self, request: user_score_pb2.UserScoreRequest, context: grpc.aio.ServicerContext
    ) -> user_score_pb2.UserScoreResponse:
        """Saga action: grant the points once, or refuse (ABORTED) if the budget cannot."""
        check_grant(request)
        barrier = barrier_of(context, self.db)

        async def grant(conn: Any) -> None:
            await self._grant(conn, request.userId, request.score)

        async with self.db.connection() as conn:
            await barrier.call(conn, grant)
        return user_score_pb2.UserScoreResponse(userId=request.userId, score=request.score)

    @rpc_method
    async def saveUserScoreCallback(
        self, request: user_score_pb2.UserScoreRequest, context: grpc.aio.ServicerContext
    ) -> user_score_pb2.UserScoreResponse:
        """Saga compensation: take the registration's points back and return them to the
        budget (a brand-new user id has no other points). Nothing if the grant never ran."""
        barrier = barrier_of(context, self.db)

        async def take_back(conn: Any) -> None:
            await self._take_back(conn, request.userId)

        async with self.db.connection() as conn:
            await barrier.call(conn, take_back)
        return user_score_pb2.UserScoreResponse(userId=request.userId, score=0)

    @rpc_method
    async def getUserScore(
        self, request: user_score_pb2.UserScoreRequest, context: grpc.aio.ServicerContext
    ) -> user_score_pb2.UserScoreResponse:
        """The user's points."""
        if request.userId <= 0:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "userId must be positive")
        rows = await self.db.query(
            "SELECT COALESCE(SUM(`score`), 0) FROM `user_score` WHERE `user_id` = ?",
            (request.userId,),
        )
        return user_score_pb2.UserScoreResponse(userId=request.userId, score=int(rows[0][0]))


async def build(conf: UserScoreConf, **server_kwargs: Any) -> RpcServer:
    """The user-score rpc server (not started)."""
    db = await Database.open(conf, DDL)
    service = UserScoreService(conf, db)
    return RpcServer(
        conf,
        lambda server: user_score_pb2_grpc.add_UserScoreServicer_to_server(service, server),  # type: ignore[no-untyped-call]
        on_close=db.close,
        **server_kwargs,
    )
