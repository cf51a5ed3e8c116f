"""The other ways out of the server: spans over OTLP/HTTP (protobuf), configured in the
`Telemetry:` block alone, and log lines written to files named in `Log.Outputs`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.busi import BusiServer
from tests.support.otlp import OtlpHttpReceiver
from tests.support.server import ServerProcess
from tests.support.util import eventually, free_port


@pytest.fixture(scope="module")
def busi() -> Iterator[BusiServer]:
    b = BusiServer(free_port()).start()
    yield b
    b.stop()


def test_spans_over_otlp_http_from_the_config_block(busi: BusiServer, tmp_path: Path) -> None:
    with OtlpHttpReceiver() as otlp:
        server = ServerProcess(workdir=str(tmp_path), env={"OTEL_BSP_SCHEDULE_DELAY": "50"},
                               extra={"Telemetry": {"Tracing": True, "Protocol": "http/protobuf",
                                                    "Endpoint": otlp.traces_url}})
        with server:
            trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
            gid = f"otlp-http-{uuid.uuid4().hex}"
            r = requests.post(f"{server.url}/submit", timeout=10,
                              headers={"traceparent": f"00-{trace_id}-{span_id}-01"}, json={
                                  "gid": gid, "trans_type": "saga", "payloads": ["{}"],
                                  "steps": [{"action": f"{busi.url}/TransIn",
                                             "compensate": f"{busi.url}/TransInRevert"}]})
            assert r.status_code == 200, r.text
            server.wait_status(gid, "succeed")

            def exported() -> set[str]:
                names = {s.name for s in otlp.in_trace(trace_id)}
                assert "dtmx run" in names and "dtmx action 01" in names, names
                return names

            eventually(exported, timeout=10)
        run = next(s for s in otlp.in_trace(trace_id) if s.name == "dtmx run")
        assert run.attributes["dtm.gid"] == gid and run.service


def test_log_outputs_to_files(busi: BusiServer, tmp_path: Path) -> None:
    """`Log.Outputs` as in DTM: comma-separated stderr, stdout or file paths; every output
    gets every line. Here stderr (the test's server.log) and a JSON file."""
    log_file = tmp_path / "logs" / "dtmx.json"
    log_file.parent.mkdir()
    server = ServerProcess(workdir=str(tmp_path), extra={
        "Log": {"Format": "json", "Outputs": f"stderr,{log_file}"}})
    with server:
        gid = f"logs-{uuid.uuid4().hex}"
        busi.state.set("TransIn", "ERROR", "SUCCESS")
        try:
            r = requests.post(f"{server.url}/submit", timeout=10, json={
                "gid": gid, "trans_type": "saga", "payloads": ["{}"],
                "steps": [{"action": f"{busi.url}/TransIn", "compensate": ""}]})
            assert r.status_code == 200
            server.wait_status(gid, "succeed")
        finally:
            busi.state.set("TransIn", "SUCCESS")
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert lines and all({"time", "level", "logger", "msg"} <= set(x) for x in lines)
    assert any(x.get("gid") == gid and "error" in x["msg"] for x in lines), lines
    assert server.proc is not None and server.proc.returncode == 0, server.log()[-3000:]
    assert lines[-1]["msg"].startswith("dtmx stopped"), lines[-3:]  # written while exiting
    stderr_json = [json.loads(x) for x in server.log().splitlines() if x.startswith("{")]
    assert stderr_json == lines, (stderr_json[-3:], lines[-3:])  # every line on both outputs
