"""dtmx.metrics' lock-free `_Histogram` and `_Counter` scrape exactly as prometheus_client's
`Histogram` and `Counter` do for the same observations (they stand in for them on the hot
path; dashboards must not tell the difference)."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from dtmx.metrics import STORE_BUCKETS, _Counter, _Histogram


def _pair() -> tuple[CollectorRegistry, CollectorRegistry]:
    return CollectorRegistry(), CollectorRegistry()


def test_histogram_scrapes_as_prometheus_client() -> None:
    ours_r, theirs_r = _pair()
    ours = _Histogram("x_seconds", "help text", ["verb"], STORE_BUCKETS, ours_r)
    theirs = Histogram("x_seconds", "help text", ["verb"], buckets=STORE_BUCKETS,
                       registry=theirs_r)
    rnd = random.Random(7)
    # exact bounds, values between them, 0, and beyond the last finite bound
    values = [*STORE_BUCKETS, 0.0, 7.5, 1e9] + [rnd.uniform(0, 6) for _ in range(500)]
    for i, v in enumerate(values):
        verb = ("update", "create", "get")[i % 3]
        ours.labels(verb).observe(v)
        theirs.labels(verb).observe(v)
    assert generate_latest(ours_r) == generate_latest(theirs_r)


def test_histogram_default_buckets_and_two_labels() -> None:
    ours_r, theirs_r = _pair()
    ours = _Histogram("d", "h", ["type", "api"], Histogram.DEFAULT_BUCKETS, ours_r)
    theirs = Histogram("d", "h", ["type", "api"], registry=theirs_r)
    for v in (0.001, 0.005, 0.3, 2.5, 11.0, 0.0):
        ours.labels("http", "submit").observe(v)
        theirs.labels("http", "submit").observe(v)
    assert generate_latest(ours_r) == generate_latest(theirs_r)


def test_counter_scrapes_as_prometheus_client() -> None:
    ours_r, theirs_r = _pair()
    ours = _Counter("c_total", "counts", ["model", "status"], ours_r)
    theirs = Counter("c_total", "counts", ["model", "status"], registry=theirs_r)
    for i in range(37):
        labels = ("saga", "ok") if i % 4 else ("tcc", "fail")
        ours.labels(*labels).inc()
        theirs.labels(*labels).inc()
    assert generate_latest(ours_r) == generate_latest(theirs_r)
