"""Prometheus metrics of the server, in a registry of its own (served at /api/metrics)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dtmx.core.models import Branch, Outcome, Transaction

if TYPE_CHECKING:
    from dtmx.net.branch_pool import PoolStats


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._trans = Counter(
            "dtm_server_transaction_process_total",
            "Transactions finished, by type and final status",
            ["model", "status"],
            registry=self.registry,
        )
        self._branch = Counter(
            "dtm_server_branch_process_total",
            "Branch calls, by type, op and outcome",
            ["model", "branchtype", "outcome"],
            registry=self.registry,
        )

        # labels() builds a key and takes a lock on every call: keep the children
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, counter: Counter, *labels: str) -> Any:
        key = (counter._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        return child

    def finished(self, trans: Transaction) -> None:
        self._child(self._trans, trans.trans_type.value, trans.status.value).inc()

    def branch(self, trans: Transaction, branch: Branch, outcome: Outcome) -> None:
        self._child(self._branch, trans.trans_type.value, branch.op.value, outcome.value).inc()

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

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
