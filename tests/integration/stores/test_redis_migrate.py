"""From the single-slot layout (every key under `{prefix}`, dtmx before partitions) to the
partitioned one: the new store refuses to start on old data, `dtmx migrate` moves it, and
then everything old is readable, claimable and listed. The old data is written by the old
create script itself (redis_v1_create.lua, kept as it was)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from dtmx.core.models import Branch, Op, ScanFilter, Status, Transaction, TransType
from dtmx.errors import ConfigError
from dtmx.net.resp import RedisAddress, RespClient
from dtmx.stores.redis_codec import encode_branch, encode_trans, flat, num
from dtmx.stores.redis_store import RedisStore
from tests.support.scratch import scratch

URL = os.environ.get("DTMX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
OLD_CREATE = (Path(__file__).with_name("redis_v1_create.lua")).read_text()
T0 = 1_700_000_000.0


def _trans(i: int, status: Status) -> Transaction:
    return Transaction(gid=f"old-{i}-{uuid.uuid4().hex[:8]}", trans_type=TransType.SAGA,
                       status=status, create_time=T0 + i, update_time=T0 + i,
                       next_cron_time=T0 + i, next_cron_interval=10.0)


def _branches(t: Transaction) -> list[Branch]:
    return [Branch(gid=t.gid, branch_id="01", op=op, url="http://b/x", data=b"{\"a\":1}",
                   create_time=T0, update_time=T0) for op in (Op.COMPENSATE, Op.ACTION)]


async def _old_create(c: RespClient, p: str, t: Transaction, bs: list[Branch]) -> None:
    fields = encode_trans(t)
    args: list[str | bytes] = [p, t.gid, "1" if t.status.finished else "0",
                               num(t.update_time), "86400000", "604800000", str(len(fields)),
                               *flat(fields)]
    for b in bs:
        args += encode_branch(b)
    keys = [f"{p}:g:{t.gid}", f"{p}:b:{t.gid}", f"{p}:cron", f"{p}:fin", f"{p}:all",
            f"{p}:seq", f"{p}:sweep"]
    assert await c.execute("EVAL", OLD_CREATE, len(keys), *keys, *args) == 1


async def test_old_layout_is_refused_then_migrated(tmp_path: Path,
                                                  cleanup: contextlib.ExitStack) -> None:
    prefix = "{" + cleanup.enter_context(scratch("redis", "dtmx_store")) + "}"
    raw = RespClient(RedisAddress.from_url(URL))
    old = [_trans(i, [Status.SUBMITTED, Status.SUCCEED, Status.FAILED][i % 3]) for i in range(9)]
    try:
        for t in old:
            await _old_create(raw, prefix, t, _branches(t))
        await raw.execute("HSET", f"{prefix}:kv:topics", "t1", "1\n1.0\n1.0\n[]")
        store = RedisStore(URL, prefix=prefix)
        with pytest.raises(ConfigError, match="dtmx migrate"):
            await store.open()
        await store.close()

        u = urlsplit(URL)
        conf = tmp_path / "c.yml"
        conf.write_text(f"Store:\n  Driver: redis\n  Host: {u.hostname}\n  Port: {u.port}\n"
                        f"  Db: '{(u.path or '/0').strip('/') or '0'}'\n"
                        f"  RedisPrefix: '{prefix}'\n")
        r = subprocess.run([sys.executable, "-m", "dtmx", "migrate", "-c", str(conf)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "moved 9 transactions into 64 partitions" in r.stdout
        again = subprocess.run([sys.executable, "-m", "dtmx", "migrate", "-c", str(conf)],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "nothing to move" in again.stdout

        store = RedisStore(URL, prefix=prefix)
        await store.open()
        try:
            for t in old:
                assert await store.get(gid=t.gid) == t
                assert await store.get_branches(gid=t.gid) == _branches(t)
            page, pos = await store.scan(position="", limit=50, filters=ScanFilter())
            assert [t.gid for t in page] == [t.gid for t in reversed(old)] and pos == ""
            due = await store.claim_due(now=T0 + 100, lease=30, owner="new", limit=50)
            assert {t.gid for t in due} == {t.gid for t in old if not t.status.finished}
            assert await store.expire_finished(before=T0 + 100, limit=50) == 6
            assert (await store.kv_find(cat="topics", key="t1")) is not None
            left = await raw.execute("KEYS", prefix + ":*")
            assert sorted(k.decode() for k in left) == [f"{prefix}:{k}" for k in (
                "kv:topics", "layout", "nodes")]
        finally:
            await store.close()
    finally:
        await raw.close()
