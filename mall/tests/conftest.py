"""Full-mode fixtures: a real etcd and dtmx server per session; per test, fresh MariaDB
databases and the three services (in-process, on free ports, registered in etcd).

The OpenTelemetry provider of this process is an in-memory one, installed once, so any test
can look at the spans the in-process services made.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import asyncmy
import httpx
import pytest
import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mall.common.config import (
    AuthConf,
    EtcdConf,
    MySQLConf,
    PrometheusConf,
    RedisNode,
    RpcClientConf,
    UserApiConf,
    UserConf,
    UserScoreConf,
)
from mall.common.server import RpcServer
from mall.user import service as user_service
from mall.user.service import cache_key
from mall.userapi.app import UserApiServer
from mall.userapi.app import build as build_api
from mall.userscore import service as score_service
from tests.support import services
from tests.support.etcd import EtcdProcess
from tests.support.server import ServerProcess
from tests.support.util import free_port

SECRET = "mall-test-secret-0123456789abcdef-xyz"

_EXPORTER = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The in-memory exporter, emptied before the test."""
    _EXPORTER.clear()
    yield _EXPORTER


def mysql_dsn(db: str) -> str:
    """A go-sql-driver DSN for the test MariaDB."""
    p = services.mysql()
    return f"{p.user}:{p.password}@tcp({p.host}:{p.port})/{db}?charset=utf8mb4"


def redis_node() -> RedisNode:
    """The test Redis as a CacheRedis entry."""
    r = services.redis_params()
    return RedisNode(Host=f"{r['host']}:{r['port']}", Pass=r["password"] or "")


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdProcess]:
    """One etcd for the session."""
    with EtcdProcess() as e:
        yield e


@pytest.fixture(scope="session")
def dtmx(etcd: EtcdProcess) -> Iterator[ServerProcess]:
    """One dtmx server (MySQL store) registered in etcd under `dtmservice`."""
    server = ServerProcess(
        store=services.store_conf("mysql", "mall_test_dtm"),
        extra={"TimeoutToFail": 30, "RequestTimeout": 3},
    )
    server.conf["MicroService"] = {
        "Driver": "dtm-driver-gozero",
        "Target": f"etcd://{etcd.endpoint}/dtmservice",
        "EndPoint": server.grpc_target,
    }
    import yaml

    server.conf_path.write_text(yaml.safe_dump(server.conf))
    with server:
        yield server
    asyncio.run(drop_databases("mall_test_dtm"))


@dataclass
class Mall:
    """One test's mall: configs, running services, and ways to look at the databases."""

    user_conf: UserConf
    score_conf: UserScoreConf
    api_conf: UserApiConf
    user_db: str
    score_db: str
    user: RpcServer | None = None
    score: RpcServer | None = None
    api: UserApiServer | None = None

    @property
    def base(self) -> str:
        """user-api's URL."""
        return f"http://127.0.0.1:{self.api_conf.Port}"

    @property
    def metrics_url(self) -> str:
        """The Prometheus endpoint."""
        p = self.api_conf.Prometheus
        return f"http://{p.Host}:{p.Port}{p.Path}"

    async def start_user(self) -> RpcServer:
        """Start user rpc (in-process)."""
        self.user = await (await user_service.build(self.user_conf)).start()
        return self.user

    async def start_score(self, **changes: Any) -> RpcServer:
        """Start user-score rpc (in-process), optionally with config changes."""
        if changes:
            self.score_conf = replace(self.score_conf, **changes)
        self.score = await (await score_service.build(self.score_conf)).start()
        return self.score

    async def start_api(self) -> UserApiServer:
        """Start user-api (in-process)."""
        self.api = await build_api(self.api_conf).start()
        return self.api

    async def sql(self, db: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run a query on one of this mall's databases."""
        p = services.mysql()
        conn = await asyncmy.connect(host=p.host, port=p.port, user=p.user,
                                     password=p.password, db=db, autocommit=True)
        try:
            async with conn.cursor() as cur:
                await cur.execute(query, args)
                return [tuple(r) for r in await cur.fetchall()]
        finally:
            conn.close()

    async def users_named(self, name: str) -> list[tuple[Any, ...]]:
        """Rows of `user` with this name."""
        return await self.sql(self.user_db, "SELECT id, name FROM `user` WHERE name = %s", name)

    async def points(self, user_id: int) -> list[tuple[Any, ...]]:
        """Rows of `user_score` of this user."""
        return await self.sql(
            self.score_db, "SELECT user_id, score FROM user_score WHERE user_id = %s", user_id
        )

    async def stop(self) -> None:
        """Stop whatever runs."""
        for svc in (self.api, self.score, self.user):
            if svc is not None:
                with contextlib.suppress(Exception):
                    await svc.stop(0) if isinstance(svc, RpcServer) else await svc.stop()
        self.api = self.score = self.user = None


def make_mall(etcd: EtcdProcess, *, budget: int = 1000) -> Mall:
    """Configs for a fresh mall: own databases, own etcd keys, free ports."""
    tag = uuid.uuid4().hex[:10]
    user_db, score_db = f"mall_test_user_{tag}", f"mall_test_score_{tag}"
    user_key, score_key = f"user.rpc.{tag}", f"score.rpc.{tag}"
    hosts = [etcd.endpoint]
    user_conf = UserConf(
        Name="user.rpc", ListenOn=f"127.0.0.1:{free_port()}",
        Etcd=EtcdConf(Hosts=hosts, Key=user_key),
        MySQL=MySQLConf(DataSource=mysql_dsn(user_db)),
        BarrierTable=f"{user_db}.barrier", CacheRedis=[redis_node()],
    )  # fmt: skip
    score_conf = UserScoreConf(
        Name="score.rpc", ListenOn=f"127.0.0.1:{free_port()}",
        Etcd=EtcdConf(Hosts=hosts, Key=score_key),
        MySQL=MySQLConf(DataSource=mysql_dsn(score_db)),
        BarrierTable=f"{score_db}.barrier", ScoreBudget=budget,
    )  # fmt: skip
    api_conf = UserApiConf(
        Host="127.0.0.1", Port=free_port(),
        UserRpc=RpcClientConf(Etcd=EtcdConf(Hosts=hosts, Key=user_key)),
        UserScoreRpc=RpcClientConf(Etcd=EtcdConf(Hosts=hosts, Key=score_key)),
        DtmServer=f"etcd://{etcd.endpoint}/dtmservice",
        RegisterTimeout=3, RegisterScore=10,
        Auth=AuthConf(Secret=SECRET, ExpireIn=3600),
        Prometheus=PrometheusConf(Host="127.0.0.1", Port=free_port(), Path="/metrics"),
    )  # fmt: skip
    return Mall(user_conf, score_conf, api_conf, user_db, score_db)


async def drop_databases(*names: str) -> None:
    """Drop the databases a test made."""
    p = services.mysql()
    conn = await asyncmy.connect(host=p.host, port=p.port, user=p.user, password=p.password)
    try:
        async with conn.cursor() as cur:
            for name in names:
                await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


@pytest.fixture
async def mall_factory(
    etcd: EtcdProcess, dtmx: ServerProcess
) -> AsyncIterator[Any]:
    """make(budget=...) -> a Mall with nothing started; everything is stopped and dropped."""
    made: list[Mall] = []

    def make(budget: int = 1000) -> Mall:
        m = make_mall(etcd, budget=budget)
        made.append(m)
        return m

    yield make
    cache = aioredis.Redis.from_url(services.redis_url())
    try:
        for m in made:
            await m.stop()
            # the cache keys of this mall's users (the seed's prefix is shared by design)
            with contextlib.suppress(Exception):
                ids = await m.sql(m.user_db, "SELECT id FROM `user`")
                if ids:
                    await cache.delete(*(cache_key(int(i)) for (i,) in ids))
            await drop_databases(m.user_db, m.score_db)
    finally:
        await cache.aclose()


@pytest.fixture
async def mall(mall_factory: Any) -> Mall:
    """A running mall with a roomy points budget."""
    m: Mall = mall_factory()
    await m.start_user()
    await m.start_score()
    await m.start_api()
    return m


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that ignores proxy settings."""
    async with httpx.AsyncClient(timeout=15, trust_env=False) as client:
        yield client


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    """The test Redis."""
    client = aioredis.Redis.from_url(services.redis_url(), decode_responses=True)
    yield client
    await client.aclose()


def unique_name(prefix: str = "u") -> str:
    """A user name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
