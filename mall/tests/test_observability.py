"""Metrics on user-api, and one trace from user-api through dtmx into both rpc services."""

from __future__ import annotations

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mall.tests.conftest import Mall, unique_name
from tests.support.util import aeventually


async def test_metrics_exposed(mall: Mall, http: httpx.AsyncClient) -> None:
    name = unique_name("metrics")
    await http.post(f"{mall.base}/user/register", json={"name": name, "gender": "male"})
    await http.post(f"{mall.base}/user/register", json={"name": ""})
    await http.get(f"{mall.base}/user/info")
    r = await http.get(mall.metrics_url)
    assert r.status_code == 200
    text = r.text
    assert ('http_server_requests_code_total{code="200",method="POST",path="/user/register"} 1.0'
            in text)
    assert ('http_server_requests_code_total{code="400",method="POST",path="/user/register"} 1.0'
            in text)
    assert 'http_server_requests_code_total{code="401",method="GET",path="/user/info"} 1.0' in text
    assert 'http_server_requests_duration_ms_count{method="POST",path="/user/register"} 2.0' in text


async def test_trace_spans_all_services(
    mall: Mall, http: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    r = await http.post(f"{mall.base}/user/register",
                        json={"name": unique_name("traced"), "gender": "female"})
    assert r.status_code == 200
    gid = r.json()["data"]["gid"]

    async def trace_complete() -> list[str]:
        got = spans.get_finished_spans()
        roots = [s for s in got if s.name == "POST /user/register"]
        assert roots, [s.name for s in got]
        trace_id = roots[0].context.trace_id
        names = sorted(s.name for s in got if s.context.trace_id == trace_id)
        assert {"saveUser", "saveUserScore"} <= set(names), names
        return names

    names = await aeventually(trace_complete, timeout=5)
    finished = spans.get_finished_spans()
    root = next(s for s in finished if s.name == "POST /user/register")
    by_name = {s.name: s for s in finished if s.context.trace_id == root.context.trace_id}
    for branch in ("saveUser", "saveUserScore"):
        span = by_name[branch]
        # the branch continued user-api's trace from the traceparent dtmx forwarded
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.kind is SpanKind.SERVER
        assert span.attributes is not None and span.attributes["dtm.gid"] == gid
    scopes = {getattr(by_name[n].instrumentation_scope, "name", "") for n in names}
    assert {"mall.user-api", "mall.user.rpc", "mall.score.rpc"} <= scopes
