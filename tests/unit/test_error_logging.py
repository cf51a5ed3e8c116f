"""How an error answered to a client is logged: one line for a client error or an outage,
the traceback for a server fault; Redis replies of a store that is starting or failing
over count as an outage."""

from __future__ import annotations

import logging

import pytest

from dtmx.errors import BadRequest, StoreError, StoreUnavailable, log_error
from dtmx.net.resp import ReplyError
from dtmx.stores.redis_base import _translated


@pytest.mark.parametrize(("error", "level", "traceback"), [
    (BadRequest("limit must be an integer"), logging.INFO, False),
    (StoreUnavailable("redis unreachable"), logging.WARNING, False),
    (StoreError("sqlite: no such table: trans_global"), logging.ERROR, True),
])
def test_levels_and_tracebacks(caplog: pytest.LogCaptureFixture, error: Exception, level: int,
                               traceback: bool) -> None:
    log = logging.getLogger("t")
    try:
        raise error
    except (BadRequest, StoreError) as e:
        with caplog.at_level(logging.DEBUG, "t"):
            log_error(log, e, "GET /x %s", e.message)
    [record] = caplog.records
    assert record.levelno == level and record.getMessage() == f"GET /x {error}"
    assert (record.exc_info is not None) is traceback


@pytest.mark.parametrize(("reply", "kind"), [
    ("LOADING Redis is loading the dataset in memory", StoreUnavailable),
    ("READONLY You can't write against a read only replica.", StoreUnavailable),
    ("CLUSTERDOWN The cluster is down", StoreUnavailable),
    ("WRONGTYPE Operation against a key holding the wrong kind of value", StoreError),
])
def test_redis_error_replies(reply: str, kind: type[StoreError]) -> None:
    e = _translated(ReplyError(reply))
    assert type(e) is kind and e.server_fault is (kind is StoreError)
