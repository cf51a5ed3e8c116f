"""Pure parts of operating dtmx: settings keys, log formats, api names, alert decisions."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from dtmx.core.models import Status, Transaction, TransType
from dtmx.errors import ConfigError
from dtmx.settings import describe_store, load, log_level
from dtmx.telemetry.alerts import AlertConfig, AlertKind, Alerts, retry_count
from dtmx.telemetry.api import api_name
from dtmx.telemetry.logs import ContextFilter, JsonFormatter, TextFormatter, bind_gid
from dtmx.telemetry.wiring import tracing_enabled
from tests.support.clock import FakeClock


def test_log_telemetry_and_alert_keys_from_file_and_env(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "c.yml"
    conf.write_text("LogLevel: warn\nLog: {Format: json, Outputs: stderr, RotationEnable: 0}\n"
                    "Telemetry: {DtmLabels: true}\nAlertWebHook: http://h/x\n"
                    "AlertRetryLimit: 5\nAlert: {Notify: 'retry, failed'}\n")
    s = load(str(conf), env={"LOG_ACCESS_LOG": "yes", "TELEMETRY_TRACING": "1"})
    assert (s.Log.Format, s.Log.AccessLog, s.Telemetry.DtmLabels) == ("json", True, True)
    assert s.Telemetry.Tracing and s.AlertRetryLimit == 5 and s.AlertWebHook == "http://h/x"
    assert log_level(s) == "warn"
    assert (s.Alert.Backoff, load(None, env={"ALERT_BACKOFF": "0.25"}).Alert.Backoff) == (1, 0.25)
    assert log_level(load(str(conf), env={"LOG_LEVEL": "debug"})) == "debug"
    assert "http://h/x" not in repr(s)  # the webhook URL may carry a token


@pytest.mark.parametrize("env, message", [
    ({"LOG_FORMAT": "xml"}, "Log.Format"),
    ({"LOG_LEVEL": "loud"}, "LogLevel"),  # LOG_LEVEL names both LogLevel and Log.Level
    ({"LOG_ACCESS_LOG": "maybe"}, "Log.AccessLog"),
    ({"ALERT_NOTIFY": "retry,late"}, "unknown kinds late"),
    ({"ALERT_WEB_HOOK": "ftp://x"}, "AlertWebHook"),
    ({"ALERT_BACKOFF": "0"}, "Alert.Backoff"),
    ({"TELEMETRY_PROTOCOL": "thrift"}, "Telemetry.Protocol"),
])
def test_bad_values_are_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(None, env=env)


def test_describe_store_never_shows_the_password() -> None:
    s = load(None, env={"STORE_URL": "postgres://dtm:pa55w0rd@db:5432/dtm"})
    assert describe_store(s) == "postgres db:5432/dtm"


def test_tracing_enabled_by_setting_or_standard_env() -> None:
    s = load(None, env={})
    assert not tracing_enabled(s, {})
    assert tracing_enabled(s, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"})
    assert tracing_enabled(s, {"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing_enabled(s, {"OTEL_TRACES_EXPORTER": "none"})
    on = load(None, env={"TELEMETRY_TRACING": "true"})
    assert tracing_enabled(on, {})
    assert not tracing_enabled(on, {"OTEL_SDK_DISABLED": "true"})


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("dtmx.engine", logging.INFO, __file__, 1, msg, (), None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_formats_carry_the_bound_gid_and_trace_id() -> None:
    bind_gid("g-1")
    record = _record("branch 01 failed")
    ContextFilter(lambda: "ab" * 16).filter(record)
    bind_gid("")
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "branch 01 failed" and line["gid"] == "g-1"
    assert line["trace_id"] == "ab" * 16 and line["level"] == "info"
    assert TextFormatter().format(record).endswith(
        f"dtmx.engine branch 01 failed gid=g-1 trace_id={'ab' * 16}")
    plain = _record("no transaction here")
    ContextFilter().filter(plain)
    assert TextFormatter().format(plain).endswith("no transaction here")
    assert "gid" not in json.loads(JsonFormatter().format(plain))


def test_api_names_are_dtms_and_bounded() -> None:
    assert api_name("/api/dtmsvr/registerBranch") == "registerbranch"
    assert api_name("/dtmgimp.Dtm/Submit") == "submit"
    assert api_name("/api/dtmsvr/topic/{name}") == "topic"


def test_retry_count_is_dtms_log2_of_the_backed_off_interval() -> None:
    assert [retry_count(i, 10) for i in (10, 20, 40, 80)] == [1, 2, 3, 4]


async def test_alerts_once_per_transaction_and_kind() -> None:
    clock = FakeClock()
    alerts = Alerts(AlertConfig(url="http://127.0.0.1:9/x", retry_limit=2,
                                kinds=frozenset(AlertKind), stuck_after=60), clock=clock)
    t = Transaction(gid="g", trans_type=TransType.SAGA, status=Status.SUBMITTED,
                    create_time=clock.now(), next_cron_interval=10)
    alerts.branch_error(t, "http://b/x", "500", 10)  # retry count 1: under the limit
    assert alerts._queue.qsize() == 0
    t.next_cron_interval = 20
    alerts.branch_error(t, "http://b/x", "500", 10)
    t.next_cron_interval = 40
    alerts.branch_error(t, "http://b/x", "500", 10)
    assert alerts._queue.qsize() == 1
    clock.advance(61)
    alerts.ongoing(t, "http://b/x")
    alerts.ongoing(t, "http://b/x")
    t.status = Status.FAILED
    alerts.finished(t)
    kinds = [alerts._queue.get_nowait()["kind"] for _ in range(alerts._queue.qsize())]
    assert kinds == ["retry", "stuck", "failed"]
    await alerts.close()


def test_tracing_off_imports_no_opentelemetry() -> None:
    code = (
        "import sys\n"
        "from dtmx.settings import load\n"
        "from dtmx.clock import SystemClock\n"
        "from dtmx.telemetry.wiring import Telemetry\n"
        "import dtmx.server, dtmx.cli\n"
        "t = Telemetry(load(None, env={}), SystemClock(), env={})\n"
        "assert t.tracing is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


def test_grafana_dashboard_queries_only_exported_metrics() -> None:
    import re
    from pathlib import Path

    from dtmx.metrics import Metrics

    exported: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        exported |= {family.name + s for s in suffixes.get(family.type, ("",))}
    exported |= {"dtmx_store_roundtrips_total", "dtmx_runs_in_flight"}  # read at scrape time
    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "docs/grafana-dtmx.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queried = {m for e in exprs for m in re.findall(r"\bdtmx?_[a-z_]+", e)}
    assert queried and queried <= exported, queried - exported
    assert {"dtm_branch_process_total", "dtm_transaction_process_total"} <= queried
