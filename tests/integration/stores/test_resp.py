"""Our RESP2 client (dtmx.net.resp): parsing (hiredis), pipelining,
connection loss without re-sending, login and database selection, script reload after a
Redis restart. Against the shared Redis at 127.0.0.1:6379 (keys under our own prefix) and,
where the test changes server state (password, SCRIPT FLUSH, restart), a redis-server of its
own on a free port."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from dtmx.core.models import Status, Transaction, TransType
from dtmx.errors import ConfigError, StoreError, StoreUnavailable
from dtmx.net.resp import (
    RedisAddress,
    ReplyError,
    RespClient,
    new_reader,
    pack_command,
)
from dtmx.stores.redis_store import RedisStore
from tests.support.util import aeventually, eventually, free_port

SHARED = RedisAddress("127.0.0.1", 6379)


@pytest.fixture
async def client() -> AsyncIterator[RespClient]:
    c = RespClient(SHARED, connections=1)
    yield c
    await c.close()


@pytest.fixture
def key() -> Iterator[str]:
    k = "{dtmx-resp-" + uuid.uuid4().hex[:12] + "}"
    yield k
    subprocess.run(["redis-cli", "-p", "6379", "del", k, k + ":l"], capture_output=True)


# ---- pure parts -----------------------------------------------------------------------
WIRE = (
    b"+OK\r\n:42\r\n:-7\r\n$5\r\nhe\r\nx\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"
    b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n-ERR inner\r\n-NOSCRIPT No matching script\r\n"
)
PARSED: list[Any] = [b"OK", 42, -7, b"he\r\nx", b"", None, None, [], [b"a", [1, None], "E"], "E"]


def _normal(x: Any) -> Any:
    """Error replies compared by kind only (their text is checked separately)."""
    if isinstance(x, ReplyError):
        return "E"
    if isinstance(x, list):
        return [_normal(i) for i in x]
    return x


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_reader_parses_every_reply_type(chunk: int) -> None:
    r = new_reader()
    got: list[Any] = []
    for i in range(0, len(WIRE), chunk):
        r.feed(WIRE[i : i + chunk])
        while (reply := r.gets()) is not False:
            got.append(reply)
    assert [_normal(g) for g in got] == PARSED
    assert str(got[-1]) == "NOSCRIPT No matching script"
    assert r.gets() is False


def test_pack_command() -> None:
    assert pack_command(("PING",)) == b"*1\r\n$4\r\nPING\r\n"
    assert pack_command(("SET", "é", b"\xff\x00\r\n", -3)) == (
        b"*4\r\n$3\r\nSET\r\n$2\r\n\xc3\xa9\r\n$4\r\n\xff\x00\r\n\r\n$2\r\n-3\r\n")


def test_address_from_url() -> None:
    a = RedisAddress.from_url("redis://us%40r:p%3Ass@h:7000/3")
    assert (a.host, a.port, a.db, a.username, a.password) == ("h", 7000, 3, "us@r", "p:ss")
    assert a.handshake() == [("AUTH", "us@r", "p:ss"), ("SELECT", 3)]
    assert "p:ss" not in repr(a)
    b = RedisAddress.from_url("redis://:pw@127.0.0.1")
    assert (b.port, b.db, b.handshake()) == (6379, 0, [("AUTH", "pw")])
    assert RedisAddress.from_url("redis://127.0.0.1:6379/0").handshake() == []
    with pytest.raises(ConfigError):
        RedisStore("http://127.0.0.1:6379/0")
    with pytest.raises(ConfigError):
        RedisStore("redis://127.0.0.1:6379/x")


# ---- against the shared Redis ---------------------------------------------------------
async def test_replies(client: RespClient, key: str) -> None:
    assert await client.execute("PING") == b"PONG"
    assert await client.execute("SET", key, b"\x00\xff\r\n") == b"OK"
    assert await client.execute("GET", key) == b"\x00\xff\r\n"
    assert await client.execute("GET", key + ":none") is None
    assert await client.execute("RPUSH", key + ":l", "a", 2, 3.5) == 3
    assert await client.execute("LRANGE", key + ":l", 0, -1) == [b"a", b"2", b"3.5"]
    nested = await client.execute("EVAL", "return {1, {'x', false}, 'y'}", 0)
    assert nested == [1, [b"x", None], b"y"]
    with pytest.raises(ReplyError, match="WRONGTYPE"):
        await client.execute("INCR", key + ":l")
    # the connection is still in step after an error reply
    assert await client.execute("GET", key) == b"\x00\xff\r\n"


async def test_pipelined_on_one_connection(client: RespClient, key: str) -> None:
    replies = await asyncio.gather(*[client.execute("ECHO", f"m{i}") for i in range(500)])
    assert replies == [f"m{i}".encode() for i in range(500)]
    n = await asyncio.gather(*[client.execute("INCR", key) for _ in range(200)])
    assert sorted(n) == list(range(1, 201))


async def test_cancelled_caller_keeps_the_stream_in_step(client: RespClient, key: str) -> None:
    calls = [asyncio.ensure_future(client.execute("ECHO", f"m{i}")) for i in range(20)]
    calls[5].cancel()
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(done[5], asyncio.CancelledError)
    assert [d for i, d in enumerate(done) if i != 5] == [
        f"m{i}".encode() for i in range(20) if i != 5
    ]
    assert await client.execute("ECHO", "after") == b"after"


async def test_lost_connection_fails_pending_and_never_resends(
    client: RespClient, key: str
) -> None:
    my_id = await client.execute("CLIENT", "ID")
    blocked = asyncio.ensure_future(client.execute("BLPOP", key + ":l", 10))
    killer = RespClient(SHARED, connections=1)
    try:
        # BLPOP reached Redis once the client shows as blocked
        async def is_blocked() -> bool:
            info: bytes = await killer.execute("CLIENT", "LIST", "ID", my_id)
            return b"cmd=blpop" in info

        await aeventually(is_blocked, timeout=5)
        assert await killer.execute("CLIENT", "KILL", "ID", my_id) == 1
        with pytest.raises(ConnectionError):
            await blocked
        # the next call reconnects; the lost BLPOP was not sent again, so the item stays
        assert await client.execute("RPUSH", key + ":l", "item") == 1
        assert await client.execute("CLIENT", "ID") != my_id
        assert await killer.execute("LLEN", key + ":l") == 1
    finally:
        await killer.close()


async def test_store_over_uvloop_and_round_robin() -> None:
    """The server runs on uvloop, whose transports are not asyncio.Transport subclasses."""
    prefix = "{dtmx-resp-" + uuid.uuid4().hex[:12] + "}"

    async def go() -> list[bool]:
        s = RedisStore("redis://127.0.0.1:6379/0", prefix=prefix, connections=3)
        await s.open()
        try:
            ts = [_trans() for _ in range(30)]
            ok = await asyncio.gather(*[s.create(trans=t, branches=[]) for t in ts])
            assert [await s.get(gid=t.gid) for t in ts] == ts
            keys = [k.decode() for k in await s._call("", "KEYS", s.layout.match())]
            await s._call("", "DEL", *keys)
            return ok
        finally:
            await s.close()

    ok = await asyncio.to_thread(uvloop.run, go())
    assert ok == [True] * 30


def _trans() -> Transaction:
    return Transaction(gid=uuid.uuid4().hex, trans_type=TransType.SAGA, status=Status.SUBMITTED,
                       create_time=1.0, update_time=1.0, next_cron_time=None)


# ---- against a redis-server of our own -------------------------------------------------
class OwnRedis:
    def __init__(self, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                     "--dir", str(workdir), "--save", "", "--appendonly", "no", *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        eventually(self._up, timeout=20)

    def _up(self) -> bool:
        r = subprocess.run(["redis-cli", "-p", str(self.port), "--no-auth-warning", "-a",
                            "pw", "ping"], capture_output=True, text=True)
        return r.stdout.strip() == "PONG"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run scripts/services.sh")
    r = OwnRedis(tmp_path, "--requirepass", "pw", "--user", "ann", "on", ">annpw", "~*",
                 "&*", "+@all")
    r.start()
    yield r
    r.stop()


async def test_auth_select_and_script_reload_after_restart(
    own_redis: OwnRedis
) -> None:
    port = own_redis.port
    wrong = RedisStore(f"redis://:nope@127.0.0.1:{port}/0")
    with pytest.raises(StoreUnavailable, match="refused the login"):
        await wrong.open()
    await wrong.close()

    s = RedisStore(f"redis://ann:annpw@127.0.0.1:{port}/5", prefix="{p}")
    await s.open()
    try:
        t = _trans()
        assert await s.create(trans=t, branches=[])
        db5 = RespClient(RedisAddress("127.0.0.1", port, db=5, password="pw"))
        db0 = RespClient(RedisAddress("127.0.0.1", port, db=0, password="pw"))
        assert await db5.execute("EXISTS", f"{s.layout.tag(t.gid)}:g:{t.gid}") == 1
        assert await db0.execute("EXISTS", f"{s.layout.tag(t.gid)}:g:{t.gid}") == 0
        # scripts gone (as after a restart): the store loads its script and runs it once
        assert await db0.execute("SCRIPT", "FLUSH") == b"OK"
        before = s.roundtrips
        assert await s.reset_next_cron_time(gid=t.gid, now=2.0)
        assert s.roundtrips == before + 3  # EVALSHA (NOSCRIPT), SCRIPT LOAD, EVALSHA
        await db0.close()
        await db5.close()

        own_redis.stop()  # not persisted: the data is gone with it
        with pytest.raises(StoreUnavailable):
            await s.get(gid=t.gid)
        with pytest.raises(StoreUnavailable):
            await s.ping()
        own_redis.start()
        await s.ping()
        assert await s.create(trans=t, branches=[])  # scripts reloaded on demand
        assert await s.get(gid=t.gid) == t
    finally:
        await s.close()


async def test_script_error_is_a_store_error() -> None:
    s = RedisStore("redis://127.0.0.1:6379/0", prefix="{dtmx-resp-x}")
    with pytest.raises(StoreError) as e:
        await s._call("EVAL", "return redis.call('NOPE')", 0)
    assert not isinstance(e.value, StoreUnavailable)
    await s.close()


async def test_connect_timeout_is_bounded() -> None:
    """A peer that accepts but never answers the login fails within connect_timeout."""
    silent: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        silent.append(w)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    s = RedisStore(f"redis://:pw@127.0.0.1:{port}/0", connect_timeout=0.3)
    try:
        async with asyncio.timeout(5):
            with pytest.raises(StoreUnavailable, match="no connection within"):
                await s.ping()
    finally:
        await s.close()
        for w in silent:
            w.close()
        server.close()
        await server.wait_closed()


async def test_stalled_redis_fails_callers_then_recovers(tmp_path: Path) -> None:
    """A stopped Redis sends no RST: the reply watchdog drops the connection instead."""
    own = OwnRedis(tmp_path)
    own.start()
    assert own.proc is not None
    s = RedisStore(f"redis://127.0.0.1:{own.port}/0", prefix="{p}", reply_timeout=0.2,
                   connect_timeout=0.5)
    try:
        await s.open()
        os.kill(own.proc.pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(5):
                with pytest.raises(StoreUnavailable, match="no reply within"):
                    await s.ping()
        finally:
            os.kill(own.proc.pid, signal.SIGCONT)
        await aeventually(_pings(s), timeout=5)
    finally:
        await s.close()
        own.stop()


def _pings(s: RedisStore) -> Callable[[], Any]:
    async def check() -> bool:
        try:
            await s.ping()
        except StoreUnavailable:
            return False
        return True

    return check
