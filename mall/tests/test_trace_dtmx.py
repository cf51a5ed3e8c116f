"""One registration traced end to end with dtmx's own spans: user-api -> dtmx -> both rpcs.

The mall's services run in this process (their spans in the in-memory exporter); a second
dtmx server, with tracing on, exports its spans over OTLP to a receiver in this process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mall.tests.conftest import unique_name
from tests.support import services
from tests.support.etcd import EtcdProcess
from tests.support.otlp import OtlpReceiver
from tests.support.server import ServerProcess
from tests.support.util import aeventually


@pytest.fixture(scope="module")
def traced_dtmx(etcd: EtcdProcess) -> Iterator[tuple[ServerProcess, OtlpReceiver, str]]:
    """A dtmx with tracing on, registered in etcd under its own key."""
    key = f"dtmservice-traced-{uuid.uuid4().hex[:8]}"
    with OtlpReceiver() as otlp:
        server = ServerProcess(
            store=services.store_conf("mysql", "mall_test_dtm"),
            extra={"TimeoutToFail": 30, "RequestTimeout": 3},
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"},
        )
        server.conf["MicroService"] = {"Driver": "dtm-driver-gozero",
                                       "Target": f"etcd://{etcd.endpoint}/{key}",
                                       "EndPoint": server.grpc_target}
        server.conf_path.write_text(yaml.safe_dump(server.conf))
        with server:
            yield server, otlp, key


async def test_registration_trace_shows_dtmx_between_api_and_rpcs(
    mall_factory: Any, etcd: EtcdProcess, traced_dtmx: tuple[ServerProcess, OtlpReceiver, str],
    spans: InMemorySpanExporter, http: httpx.AsyncClient,
) -> None:
    _, otlp, key = traced_dtmx
    mall = mall_factory()
    mall.api_conf = replace(mall.api_conf, DtmServer=f"etcd://{etcd.endpoint}/{key}")
    await mall.start_user()
    await mall.start_score()
    await mall.start_api()
    r = await http.post(f"{mall.base}/user/register",
                        json={"name": unique_name("dtmx-traced"), "gender": "female"})
    assert r.status_code == 200, r.text
    gid = r.json()["data"]["gid"]

    async def complete() -> dict[str, Any]:
        mine = {s.name: s for s in spans.get_finished_spans()}
        assert {"POST /user/register", "saveUser", "saveUserScore"} <= set(mine), set(mine)
        trace_id = format(mine["POST /user/register"].context.trace_id, "032x")
        theirs = {s.name: s for s in otlp.in_trace(trace_id)}
        assert {"dtmx run", "dtmx action 01", "dtmx action 02"} <= set(theirs), set(theirs)
        return {"mine": mine, "theirs": theirs, "trace_id": trace_id}

    got = await aeventually(complete, timeout=10)
    mine, theirs = got["mine"], got["theirs"]
    api_spans = {format(s.context.span_id, "016x") for s in spans.get_finished_spans()
                 if format(s.context.trace_id, "032x") == got["trace_id"]}
    # dtmx's run continues user-api's trace (the SDK sends it in branch_headers) ...
    run = theirs["dtmx run"]
    assert run.parent_id in api_spans and run.attributes["dtm.gid"] == gid
    # ... and each rpc's branch span is the child of a dtmx branch-call span
    calls = {s.span_id: s for s in theirs.values() if s.name.startswith("dtmx action")}
    for name in ("saveUser", "saveUserScore"):
        parent = mine[name].parent
        assert parent is not None
        call = calls[format(parent.span_id, "016x")]
        assert call.attributes["dtm.gid"] == gid and call.kind == 3
