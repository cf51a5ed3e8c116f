"""API tokens against a real `dtmx serve`: every caller against every route, HTTP and gRPC.

Callers: no token, a wrong token, and one token of each role (client from the YAML, operator
from a token file, admin from an environment variable). A route the caller may use answers
anything but 401/403 (often 400/404 here: the bodies are minimal, what matters is that the
check let the request through to validation); otherwise 401 (no or wrong token) or 403.
"""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dtmx.api.proto import dtmgimp_pb2, dtmgimp_pb2_grpc
from dtmx.security.roles import GRPC_ROLES, HTTP_ROLES, Role
from tests.support.server import ServerProcess
from tests.support.util import eventually

TOKENS = {
    "client": "client-" + uuid.uuid4().hex,
    "operator": "operator-" + uuid.uuid4().hex,
    "admin": "admin-" + uuid.uuid4().hex,
}
CALLERS: dict[str, str | None] = {
    "none": None, "wrong": "wrong-" + uuid.uuid4().hex, **TOKENS,
}
ROLE_OF = {"client": Role.CLIENT, "operator": Role.OPERATOR, "admin": Role.ADMIN}

# route name -> (method, path under the server, JSON body or None)
HTTP: dict[str, tuple[str, str, Any]] = {
    "version": ("GET", "/api/dtmsvr/version", None),
    "newGid": ("GET", "/api/dtmsvr/newGid", None),
    "prepare": ("POST", "/api/dtmsvr/prepare", {}),
    "submit": ("POST", "/api/dtmsvr/submit", {}),
    "abort": ("POST", "/api/dtmsvr/abort", {}),
    "registerBranch": ("POST", "/api/dtmsvr/registerBranch", {}),
    "registerTccBranch": ("POST", "/api/dtmsvr/registerTccBranch", {}),
    "registerXaBranch": ("POST", "/api/dtmsvr/registerXaBranch", {}),
    "prepareWorkflow": ("POST", "/api/dtmsvr/prepareWorkflow", {}),
    "query": ("GET", "/api/dtmsvr/query?gid=auth-none", None),
    "all": ("GET", "/api/dtmsvr/all", None),
    "forceStop": ("POST", "/api/dtmsvr/forceStop", {"gid": "auth-none"}),
    "resetCronTime": ("GET", "/api/dtmsvr/resetCronTime?limit=1", None),
    "resetNextCronTime": ("POST", "/api/dtmsvr/resetNextCronTime", {"gid": "auth-none"}),
    "subscribe": ("GET", "/api/dtmsvr/subscribe?topic=auth&url=http://127.0.0.1:9/x", None),
    "unsubscribe": ("GET", "/api/dtmsvr/unsubscribe?topic=auth&url=http://127.0.0.1:9/y", None),
    "topic": ("DELETE", "/api/dtmsvr/topic/auth-none", None),
    "scanKV": ("GET", "/api/dtmsvr/scanKV?cat=topics", None),
    "queryKV": ("GET", "/api/dtmsvr/queryKV?cat=topics", None),
    "metrics": ("GET", "/api/metrics", None),
    "ping": ("GET", "/api/ping", None),
    "json-rpc": ("POST", "/api/json-rpc", {"jsonrpc": "2.0", "id": 1, "method": "newGid"}),
    "health": ("GET", "/api/health", None),
}

GRPC: dict[str, tuple[str, Any]] = {
    "NewGid": ("NewGid", empty_pb2.Empty()),
    "Submit": ("Submit", dtmgimp_pb2.DtmRequest()),
    "Prepare": ("Prepare", dtmgimp_pb2.DtmRequest()),
    "Abort": ("Abort", dtmgimp_pb2.DtmRequest()),
    "RegisterBranch": ("RegisterBranch", dtmgimp_pb2.DtmBranchRequest()),
    "PrepareWorkflow": ("PrepareWorkflow", dtmgimp_pb2.DtmRequest()),
    "Subscribe": ("Subscribe", dtmgimp_pb2.DtmTopicRequest(Topic="", URL="")),
    "Unsubscribe": ("Unsubscribe", dtmgimp_pb2.DtmTopicRequest(Topic="g", URL="http://x/")),
    "DeleteTopic": ("DeleteTopic", dtmgimp_pb2.DtmTopicRequest(Topic="auth-none")),
}


def _expected(caller: str, need: Role | None) -> int | None:
    """401/403 when refused; None when the request must get through the check."""
    if need is None:
        return None
    if caller in ("none", "wrong"):
        return 401
    return None if ROLE_OF[caller] >= need else 403


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("auth")
    token_file = workdir / "operator.token"
    token_file.write_text(f"# operator token\n{TOKENS['operator']}\n")
    auth = {"Tokens": [
        {"Name": "svc", "Token": TOKENS["client"], "Role": "client"},
        {"Name": "ops", "TokenFile": str(token_file), "Role": "operator"},
        {"Name": "root", "TokenEnv": "DTMX_TEST_ADMIN_TOKEN", "Role": "admin"},
    ]}
    s = ServerProcess(extra={"Auth": auth}, workdir=str(workdir),
                      env={"DTMX_TEST_ADMIN_TOKEN": TOKENS["admin"]}, token=TOKENS["client"])
    s.start()
    yield s
    s.stop()


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def test_the_tables_cover_every_route() -> None:
    assert set(HTTP) == set(HTTP_ROLES)
    assert set(GRPC) == set(GRPC_ROLES)


def test_every_caller_against_every_http_route(server: ServerProcess) -> None:
    wrong: list[str] = []
    for name, (method, path, body) in HTTP.items():
        for caller, token in CALLERS.items():
            r = requests.request(method, server.base + path, json=body,
                                 headers=_headers(token), timeout=10)
            want = _expected(caller, HTTP_ROLES[name])
            got_refused = r.status_code in (401, 403)
            if (want is None and (got_refused or r.status_code >= 500)) or (
                    want is not None and r.status_code != want):
                wrong.append(f"{caller} {method} {path}: {r.status_code} (want {want})")
            if r.status_code == 401:
                assert "Bearer" in r.json()["message"]
    assert not wrong, "\n".join(wrong)


async def test_every_caller_against_every_grpc_method(server: ServerProcess) -> None:
    wrong: list[str] = []
    codes = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED}
    async with grpc.aio.insecure_channel(server.grpc_target) as ch:
        stub = dtmgimp_pb2_grpc.DtmStub(ch)
        for name, (method, request) in GRPC.items():
            for caller, token in CALLERS.items():
                metadata = (("authorization", f"Bearer {token}"),) if token else ()
                code = grpc.StatusCode.OK
                try:
                    await getattr(stub, method)(request, metadata=metadata, timeout=10)
                except grpc.aio.AioRpcError as e:
                    code = e.code()
                want = _expected(caller, GRPC_ROLES[name])
                refused = code in codes.values()
                if (want is None and (refused or code is grpc.StatusCode.INTERNAL)) or (
                        want is not None and code is not codes[want]):
                    wrong.append(f"{caller} {method}: {code} (want {want})")
        # health stays open: probes carry no token
        health = health_pb2_grpc.HealthStub(ch)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert not wrong, "\n".join(wrong)


def test_operator_actions_are_audited_and_no_token_is_logged(server: ServerProcess) -> None:
    gid = f"auth-audit-{uuid.uuid4().hex}"
    r = requests.post(f"{server.url}/forceStop", json={"gid": gid},
                      headers=_headers(TOKENS["operator"]), timeout=10)
    assert r.status_code == 404
    r = requests.post(f"{server.url}/forceStop", json={"gid": gid},
                      headers=_headers(TOKENS["client"]), timeout=10)
    assert r.status_code == 403

    def audited() -> list[str]:
        return [line for line in server.log().splitlines() if gid in line and "dtmx.audit" in line]

    lines = eventually(lambda: len(audited()) >= 2 and audited(), timeout=5)
    assert any('"who":"ops"' in x and '"role":"operator"' in x and '"outcome":"404' in x
               for x in lines)
    assert any('"who":"svc"' in x and '"outcome":"403' in x for x in lines)
    assert all(re.search(r'"at":"\d{4}-\d\d-\d\dT[\d:.]+Z"', x) for x in lines)
    log = server.log()
    for token in (*TOKENS.values(), CALLERS["wrong"]):
        assert token and token not in log


def test_tokens_rotate_without_a_restart(tmp_path: Path) -> None:
    old, new, newer = ("rot-" + uuid.uuid4().hex for _ in range(3))
    token_file = tmp_path / "t"
    token_file.write_text(old + "\n")
    auth = {"Tokens": [{"Name": "ops", "TokenFile": str(token_file), "Role": "operator"}],
            "ReloadInterval": 0.1}
    s = ServerProcess(extra={"Auth": auth}, workdir=str(tmp_path))
    with s:
        def status(token: str) -> int:
            return requests.get(f"{s.url}/all", headers=_headers(token), timeout=5).status_code

        assert (status(old), status(new)) == (200, 401)
        # both valid during the switch, then the old one gone: SIGHUP reloads at once...
        token_file.write_text(f"{old}\n{new}\n")
        assert s.proc is not None
        s.proc.send_signal(signal.SIGHUP)
        eventually(lambda: status(new) == 200, timeout=5)
        assert status(old) == 200
        # ...and a change of the file is noticed without a signal
        token_file.write_text(f"{newer}\n")
        eventually(lambda: status(newer) == 200 and status(old) == 401, timeout=5)
        # a file that cannot be read keeps the tokens in force
        token_file.unlink()
        eventually(lambda: "token reload failed" in s.log(), timeout=5)
        assert status(newer) == 200
        assert newer not in s.log() and old not in s.log()


def test_without_auth_everything_is_open_and_the_server_says_so(tmp_path: Path) -> None:
    with ServerProcess(workdir=str(tmp_path)) as s:
        assert requests.get(f"{s.url}/all", timeout=5).status_code == 200
        warnings = [x for x in s.log().splitlines() if "Auth is not configured" in x]
        assert len(warnings) == 1 and "WARNING" in warnings[0]
