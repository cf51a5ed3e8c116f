"""Prometheus metrics of the server, in a registry of its own (served at /api/metrics).

DTM's series keep DTM's names, labels and label values (`dtmsvr/metrics.go`), so dashboards
and alerts written for DTM match: `dtm_server_info`, `dtm_server_process_total{type,api,
status}`, `dtm_server_response_duration{type,api}`, `dtm_transaction_process_total{model,
status}`, `dtm_transaction_handled_duration{model}`, `dtm_branch_process_total{model,
branchtype,status}`. DTM also labels branches by `branchid`, one series per branch id; that
label is only there with `dtm_labels=True` (DTM's exact label set).

Ours, named `dtmx_*`: store round trips, store latency per verb, poller lag, runs in flight,
lease takeovers.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

from dtmx import __version__
from dtmx.core.models import Branch, Outcome, Status, Transaction

# a store round trip takes from a fraction of a millisecond (SQLite, Redis) to a few
STORE_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

S = TypeVar("S")

OK, FAIL = "ok", "fail"  # DTM's status label values

Probe = Callable[[], Awaitable[None]]

# DTM's Go client exports no `_created` series; neither do we (half the lines of a scrape)
disable_created_metrics()  # type: ignore[no-untyped-call]

if TYPE_CHECKING:
    from dtmx.net.branch_pool import PoolStats


class Metrics:
    """The server's series; the engine, API and store wrapper report into it."""

    def __init__(self, *, dtm_labels: bool = False, grpc_version: str = "") -> None:
        self.registry = r = CollectorRegistry()
        self.dtm_labels = dtm_labels
        info = Gauge("dtm_server_info", "The information of this dtm server.",
                     ["gin_version", "grpc_version", "version"], registry=r)
        # no gin here: our own HTTP server stands where DTM's gin does
        info.labels("dtmx-http", grpc_version, __version__).set(1)
        self._process = _Counter("dtm_server_process_total", "All request received by dtm",
                                 ["type", "api", "status"], r)
        self._response = _Histogram("dtm_server_response_duration",
                                    "The request durations of a dtm server api",
                                    ["type", "api"], Histogram.DEFAULT_BUCKETS, r)
        self._trans = _Counter("dtm_transaction_process_total",
                               "All transactions processed by dtm", ["model", "status"], r)
        self._handled = _Histogram(
            "dtm_transaction_handled_duration",
            "Histogram of handling latency of the transaction that handled by the server.",
            ["model"], Histogram.DEFAULT_BUCKETS, r)
        branch_labels = ["model", "branchid", "branchtype", "status"] if dtm_labels else [
            "model", "branchtype", "status"]
        self._branch = _Counter("dtm_branch_process_total", "All branches processed by dtm",
                                branch_labels, r)
        self._store = _Histogram("dtmx_store_duration_seconds",
                                 "Store round trips by verb, seconds", ["verb"],
                                 STORE_BUCKETS, r)
        self.poller_lag = Gauge(
            "dtmx_poller_lag_seconds",
            "Now minus next_cron_time of the oldest due unfinished transaction (0: none due),"
            " read at scrape time", registry=r)
        self._takeovers = Counter(
            "dtmx_lease_takeovers_total",
            "Runs stopped because the transaction changed under them: another server took it"
            " over after the lease ran out, or an operator stopped it", registry=r)
        self._probes: list[Probe] = []
        # labels() builds a key and takes a lock on every call: keep the children
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # ---- reported by the engine ---------------------------------------------------------
    def finished(self, trans: Transaction, now: float) -> None:
        """A transaction reached succeed (ok) or failed (fail)."""
        model = trans.trans_type.value
        self._child(self._trans, model, OK if trans.status is Status.SUCCEED else FAIL).inc()
        self._child(self._handled, model).observe(max(0.0, now - trans.create_time))

    def branch(self, trans: Transaction, branch: Branch, outcome: Outcome) -> None:
        """One branch call's result: ok only when the branch succeeded (DTM's rule)."""
        status = OK if outcome is Outcome.SUCCESS else FAIL
        if self.dtm_labels:
            child = self._child(self._branch, trans.trans_type.value, branch.branch_id,
                                branch.op.value, status)
        else:
            child = self._child(self._branch, trans.trans_type.value, branch.op.value, status)
        child.inc()

    def takeover(self) -> None:
        """Count a transaction taken over from another owner."""
        self._takeovers.inc()

    # ---- reported by the API adapters and the store wrapper -----------------------------
    def request(self, kind: str, api: str, ok: bool, seconds: float) -> None:
        """One API request (`kind` http or grpc); fail is DTM's: HTTP >= 400 or a gRPC error."""
        self._child(self._process, kind, api, OK if ok else FAIL).inc()
        self._child(self._response, kind, api).observe(seconds)

    def store_call(self, verb: str, seconds: float) -> None:
        """Record one store round trip of `verb` and how long it took."""
        self._child(self._store, verb).observe(seconds)

    # ---- read at scrape time --------------------------------------------------------------
    def count_store_roundtrips(self, read: Callable[[], int]) -> None:
        """Export the store's round-trip counter (read at scrape time, off the hot path)."""
        self.registry.register(_Roundtrips(read))

    def count_branch_connections(self, read: Callable[[], PoolStats]) -> None:
        """Export the branch client's connections: open and idle now, opened in all (a
        count that grows with the calls means some branch does not keep connections alive)."""
        self.registry.register(_BranchConnections(read))

    def gauge_runs_in_flight(self, read: Callable[[], int]) -> None:
        """Export how many transaction runs this process has going (read at scrape time)."""
        self.registry.register(_RunsInFlight(read))


    def add_probe(self, probe: Probe) -> None:
        """An async refresh run before each scrape (e.g. the poller lag: one store query)."""
        self._probes.append(probe)

    async def render(self) -> bytes:
        """The Prometheus text exposition, after refreshing the sampled gauges."""
        for probe in self._probes:
            await probe()
        return generate_latest(self.registry)


class _Series:
    """The buckets (not cumulative) and sum of one label set of a `_Histogram`."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        """Count `amount` in the first bucket whose bound is >= it, and add it to the sum."""
        self.total += amount
        self.counts[bisect_left(self._bounds, amount)] += 1


class _Labelled(Collector, Generic[S]):
    """A metric family's label sets, each made by `new` on first use (as prometheus_client
    makes a child in `labels`), kept in the order they appeared."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry, new: Callable[[], S]) -> None:
        self._name, self._doc, self._labelnames = name, documentation, list(labelnames)
        self._series: dict[tuple[str, ...], S] = {}
        self._new = new
        registry.register(self)

    def labels(self, *values: str) -> S:
        """The series of one label set (created on first use)."""
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = self._new()
        return series


class _Histogram(_Labelled[_Series]):
    """A labelled histogram, scraped as prometheus_client's `Histogram` is (same samples,
    names and order). Why not that one: its observe takes a lock for the sum and for the
    bucket and walks the bounds in Python, about 0.6 us; this bisects and adds, and there
    are several observations per transaction. Observed only from the event loop's thread
    (the API, the engine and the store wrapper all run there), so it needs no lock."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float], registry: CollectorRegistry) -> None:
        bounds = tuple(float(b) for b in buckets)
        if bounds[-1] != INF:
            bounds += (INF,)
        self._bounds = bounds
        self._les = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry,
                         lambda: _Series(bounds))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """One histogram family: cumulative buckets, count and sum per label set."""
        family = HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)
        for values, series in list(self._series.items()):
            acc = 0.0
            buckets = []
            for le, n in zip(self._les, series.counts, strict=True):
                acc += n
                buckets.append((le, acc))
            family.add_metric(list(values), buckets, series.total)
        yield family


class _Count:
    """One label set of a `_Counter`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self) -> None:
        """Add one."""
        self.value += 1.0


class _Counter(_Labelled[_Count]):
    """A labelled counter, scraped as prometheus_client's `Counter` is; lock-free for the
    reason `_Histogram` gives (its inc takes a lock, about 0.3 us)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:
        super().__init__(name, documentation, labelnames, registry, _Count)

    def collect(self) -> Iterator[CounterMetricFamily]:
        """One counter family, a `_total` sample per label set."""
        family = CounterMetricFamily(self._name, self._doc, labels=self._labelnames)
        for values, count in list(self._series.items()):
            family.add_metric(list(values), count.value)
        yield family


class _Roundtrips(Collector):
    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "dtmx_store_roundtrips", "Calls that reached the store", value=self._read()
        )


class _BranchConnections(Collector):
    def __init__(self, read: Callable[[], PoolStats]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._read()
        yield GaugeMetricFamily(
            "dtmx_branch_connections_open", "Open HTTP connections to branches", value=stats.open
        )
        yield GaugeMetricFamily(
            "dtmx_branch_connections_idle", "Idle keep-alive connections to branches",
            value=stats.idle,
        )
        yield CounterMetricFamily(
            "dtmx_branch_connections_opened", "HTTP connections opened to branches",
            value=stats.connects,
        )


class _RunsInFlight(Collector):
    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "dtmx_runs_in_flight", "Transaction runs of this process not ended yet",
            value=self._read(),
        )
