"""Pure parts of the partitioned Redis layout and the cluster client's slot hashing."""

from __future__ import annotations

import pytest

from dtmx.errors import ConfigError
from dtmx.net.resp_cluster import crc16, key_slot
from dtmx.stores.redis_layout import Layout, LeaseBook, ScanPart, allocate, merge_scan, share


def test_key_slot_matches_redis() -> None:
    assert crc16(b"123456789") == 0x31C3  # the specification's check value
    assert key_slot("foo") == 12182  # `CLUSTER KEYSLOT foo`
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("foo{}{bar}") == crc16(b"foo{}{bar}") % 16384  # empty tag: whole key
    assert key_slot("foo{{bar}}zap") == crc16(b"{bar") % 16384


def test_layout_tags_and_partitions() -> None:
    lay = Layout("{a}", 64)
    assert lay.meta == "{a}" and lay.tags[5] == "{a:5}" and lay.key(5, "cron") == "{a:5}:cron"
    assert lay.tag("g1") == lay.tags[lay.part("g1")]
    assert len({lay.part(f"g{i}") for i in range(1000)}) == 64
    assert Layout("plain", 4).meta == "{plain}"
    for bad in (0, 3, 2048):
        with pytest.raises(ConfigError, match="power of two"):
            Layout("{a}", bad)


def test_allocate_shares_a_limit() -> None:
    assert allocate([(0, 2), (1, 0), (2, 5), (3, 9)], 4) == [(0, 2), (2, 2)]
    assert allocate([(0, 2)], 0) == []


def test_merge_scan_pages_newest_first_across_partitions() -> None:
    a = ScanPart([(90, [b"a90"]), (70, [b"a70"])], frontier=70)  # stopped at its limit
    b = ScanPart([(80, [b"b80"])], frontier=None)                  # seen to its end
    page, pos = merge_scan([a, b], 2)
    assert page == [[b"a90"], [b"b80"]] and pos == "80"
    page, pos = merge_scan([a, b], 5)  # below a's frontier nothing is known yet
    assert page == [[b"a90"], [b"b80"], [b"a70"]] and pos == "70"
    assert merge_scan([ScanPart([], None)], 3) == ([], "")


def test_lease_book_takes_its_share_and_gives_back_the_rest() -> None:
    book = LeaseBook(8, "n1")
    renew, acquire, release = book.plan(now=0.0, servers=1)
    assert renew == [] and sorted(acquire) == list(range(8)) and release == []
    for p in acquire:
        book.record(p, True, 30.0, 0.0, recheck=5.0)
    renew, acquire, release = book.plan(now=1.0, servers=2)  # a second server came
    assert len(renew) == share(8, 2) == 4 and acquire == [] and len(release) == 4
    for p in release:
        book.record(p, False, 1.0, 1.0, recheck=0.0)
    book.record(renew[0], False, 40.0, 1.0, recheck=5.0)  # lost: looked at again at 6
    assert renew[0] not in book.plan(now=2.0, servers=2)[1]
    assert renew[0] in book.plan(now=6.0, servers=2)[1]
