"""Pure parts of the operator commands: durations, --since, tables; server health."""

from __future__ import annotations

import pytest

from dtmx.heartbeat import FORGET_AFTER, Health, ServerRecord
from dtmx.ops.client import Exit, base_url
from dtmx.ops.prune import REDIS_KEY
from dtmx.ops.text import ago, clip, parse_duration, parse_since, short_time, table


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("15m", 900), ("36h", 129600), ("7d", 604800), ("2w", 1209600),
    ("1h30m", 5400), ("45", 45), ("1.5h", 5400), (" 7D ", 604800),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "7x", "7d junk", "-7d", "7 d", "h1"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_parse_since() -> None:
    now = 1_800_000_000.0
    assert parse_since("2h", now) == now - 7200
    assert parse_since("2027-01-15T00:00:00Z", now) == 1_799_971_200.0
    assert parse_since("2027-01-15T00:00:00", now) == 1_799_971_200.0  # naive = UTC
    assert parse_since("2027-01-15T01:00:00+01:00", now) == 1_799_971_200.0
    with pytest.raises(ValueError, match="--since"):
        parse_since("last tuesday", now)


def test_table_and_cells() -> None:
    out = table(["A", "LONG HEADER"], [["x", 1], ["yyyy", None]])
    assert out.splitlines() == ["A     LONG HEADER", "x     1", "yyyy"]
    assert table(["A"], []) == "(none)"
    assert clip("a\nb   c", 10) == "a b c"
    assert clip("abcdefghijkl", 5) == "abcd…"
    assert short_time("2026-11-30T23:45:22.064+00:00") == "2026-11-30 23:45:22Z"
    assert short_time(None) == ""
    assert [ago(s) for s in (5, 600, 7200, 300000)] == ["5s", "10m", "2h", "3d"]


def test_base_url() -> None:
    assert base_url("127.0.0.1:36789") == "http://127.0.0.1:36789"
    assert base_url("http://h:1/api/dtmsvr/") == "http://h:1"
    assert base_url("https://dtm.example") == "https://dtm.example"
    assert int(Exit.NOT_FOUND) == 3


def test_server_health_from_heartbeat_age() -> None:
    rec = ServerRecord(id="h:1:a", host="h", pid=1, version="0", http_port=1, grpc_port=0,
                       started=0.0, beat=100.0, interval=5.0)
    assert rec.health(100.0 + 15) is Health.UP
    assert rec.health(100.0 + 15.1) is Health.DOWN
    assert not rec.forgotten(100.0 + FORGET_AFTER)
    assert rec.forgotten(100.0 + FORGET_AFTER + 1)


@pytest.mark.parametrize("key, barrier", [
    ("gid1-01-action-01", True), ("a-b-c-compensate-01", True), ("g-01-msg-01", True),
    ("8f14e45f-ceea-467f-a0e6-0123456789ab", False), ("g-01-action", False),
    ("g-01-actions-01", False), ("user:42", False),
])
def test_redis_barrier_key_shape(key: str, barrier: bool) -> None:
    assert bool(REDIS_KEY.match(key)) is barrier
