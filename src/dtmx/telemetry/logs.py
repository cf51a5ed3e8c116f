"""Log set-up: `Log.Level`, `Log.Format: text|json`, `Log.Outputs`, and the gid on every line.

The gid of the transaction being worked on lives in a context variable, bound where a run
or a request about one transaction starts (`bind_gid`); a filter copies it, and the trace id
when tracing is on, onto every record, so `grep gid=...` (text) or a JSON query finds every
line about a transaction, whichever module wrote it.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson

_gid: contextvars.ContextVar[str] = contextvars.ContextVar("dtmx_gid", default="")

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}

# attributes every LogRecord has: anything else on a record came from `extra=`
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def bind_gid(gid: str) -> None:
    """Name `gid` on every log line from here on in this task (and tasks it starts)."""
    _gid.set(gid)


def current_gid() -> str:
    """The gid this task's log lines name ("" outside a transaction)."""
    return _gid.get()


class ContextFilter(logging.Filter):
    """Adds `gid` (and `trace_id` when a trace-id reader is given) to each record."""

    def __init__(self, trace_id: Callable[[], str] | None = None) -> None:
        super().__init__()
        self._trace_id = trace_id

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp the record with the task's gid (and trace id); never drops a record."""
        if not getattr(record, "gid", ""):
            record.gid = _gid.get()
        if self._trace_id is not None and not getattr(record, "trace_id", ""):
            record.trace_id = self._trace_id()
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message gid=... trace_id=...` (context only when there is some)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The plain line with `gid=` and `trace_id=` appended to its first line."""
        line = super().format(record)
        tail = [f"{k}={v}" for k in ("gid", "trace_id") if (v := getattr(record, k, ""))]
        if not tail:
            return line
        head, sep, rest = line.partition("\n")  # keep a traceback below the context
        return f"{head} {' '.join(tail)}{sep}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, gid, trace_id, any `extra=`."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object on one line."""
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value not in ("", None):
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def otel_trace_id() -> str:
    """The current OpenTelemetry trace id (hex), or "" (used only when tracing is on)."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


class Buffered(logging.Handler):
    """Holds records written before logging is set up (config warnings), to replay after."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record for `replay`."""
        self.records.append(record)

    def replay(self) -> None:
        """Hand every kept record to its logger's handlers as now configured, then forget them."""
        for record in self.records:
            logging.getLogger(record.name).handle(record)
        self.records.clear()


def setup(
    *,
    level: str,
    fmt: str = "text",
    outputs: str = "stderr",
    trace_id: Callable[[], str] | None = None,
) -> None:
    """Configure the root logger once, at the entry point (replaces earlier handlers)."""
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    context = ContextFilter(trace_id)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    for target in [o.strip() for o in outputs.split(",") if o.strip()] or ["stderr"]:
        handler: logging.Handler
        if target in ("stderr", "stdout"):
            stream: TextIO = sys.stderr if target == "stderr" else sys.stdout
            handler = logging.StreamHandler(stream)
        else:
            handler = logging.FileHandler(target)
        handler.setFormatter(formatter)
        handler.addFilter(context)
        root.addHandler(handler)
    root.setLevel(LEVELS[level.lower()])
