"""What the engine reports while it runs transactions: metrics and alerts hang off it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dtmx.clock import Clock
from dtmx.core import processors
from dtmx.core.models import Branch, Outcome, Transaction
from dtmx.invoke.base import CallResult
from dtmx.metrics import Metrics
from dtmx.telemetry.alerts import Alerts
from dtmx.telemetry.logs import bind_gid

if TYPE_CHECKING:  # imported only when tracing is on: OpenTelemetry is optional
    from dtmx.telemetry.tracing import Tracing


class Observer:
    """Told of each run, branch result and final status; never changes the outcome.

    `base_interval` is the server's RetryInterval, which DTM's retry count for alerts is
    measured against when a transaction sets none of its own.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        metrics: Metrics | None = None,
        alerts: Alerts | None = None,
        base_interval: float = 10.0,
        tracing: Tracing | None = None,
    ) -> None:
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.alerts = alerts
        self.base_interval = base_interval
        self.tracing = tracing

    def about(self, gid: str, trans_type: str = "", branch_id: str = "") -> None:
        """A request about one transaction: its log lines and its span name it."""
        bind_gid(gid)
        if self.tracing is not None:
            self.tracing.annotate(gid, trans_type, branch_id)

    def run_started(self, trans: Transaction) -> None:
        """A run of `trans` begins: its log lines name the gid; a span opens if tracing is on."""
        bind_gid(trans.gid)  # every log line of this run names the transaction
        if self.tracing is not None:
            self.tracing.run_started(trans)

    def run_ended(self, trans: Transaction) -> None:
        """A run of `trans` ends (whatever its outcome): its span closes."""
        if self.tracing is not None:
            self.tracing.run_ended(trans)

    def finished(self, trans: Transaction) -> None:
        """`trans` reached a final status: count it and alert on failure when asked to."""
        self.metrics.finished(trans, self.clock.now())
        if self.alerts is not None:
            self.alerts.finished(trans)

    def branch(self, trans: Transaction, branch: Branch, result: CallResult) -> None:
        """One branch call's outcome: counted, and alerts for retries and ongoing answers."""
        self.metrics.branch(trans, branch, result.outcome)
        if self.alerts is None or result.outcome is Outcome.SUCCESS:
            return
        if result.outcome is Outcome.ONGOING:
            self.alerts.ongoing(trans, branch.url)
            return
        if processors.branch_status(trans.trans_type, branch.op, result.outcome) is None:
            base = trans.options.retry_interval or self.base_interval
            self.alerts.branch_error(trans, branch.url, result.detail, float(base))

    def lost_claim(self, trans: Transaction) -> None:
        """A run found that another owner had taken its transaction (counted as a takeover)."""
        self.metrics.takeover()
