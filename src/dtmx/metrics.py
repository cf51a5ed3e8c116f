"""Prometheus metrics of the server, in a registry of its own (served at /api/metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from dtmx.core.models import Branch, Outcome, Transaction


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

    def finished(self, trans: Transaction) -> None:
        self._trans.labels(trans.trans_type.value, trans.status.value).inc()

    def branch(self, trans: Transaction, branch: Branch, outcome: Outcome) -> None:
        self._branch.labels(trans.trans_type.value, branch.op.value, outcome.value).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
