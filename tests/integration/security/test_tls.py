"""TLS with certificates made at test time: the HTTP and gRPC APIs (also with client
certificates), https:// branches verified against a CA bundle, and Redis over TLS."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import requests
from google.protobuf import empty_pb2

from dtmx.api.proto import dtmgimp_pb2_grpc
from tests.support.branch_stub import branch_stub
from tests.support.server import ServerProcess
from tests.support.tls import Certs, make_certs
from tests.support.util import eventually, free_port


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _tls(certs: Certs, **more: str) -> dict[str, str]:
    return {"CertFile": str(certs.server_cert), "KeyFile": str(certs.server_key), **more}


def _server(tmp: Path, certs: Certs, extra: dict[str, Any]) -> ServerProcess:
    s = ServerProcess(workdir=str(tmp), extra=extra)
    s.verify = str(certs.ca)
    return s


async def _new_gid(target: str, creds: grpc.ChannelCredentials) -> str:
    async with grpc.aio.secure_channel(target, creds) as ch:
        reply = await dtmgimp_pb2_grpc.DtmStub(ch).NewGid(empty_pb2.Empty(), timeout=10)
    return str(reply.Gid)


async def test_api_serves_tls_only(certs: Certs, tmp_path: Path) -> None:
    s = _server(tmp_path, certs, {"Tls": _tls(certs)})
    with s:
        assert requests.get(f"{s.url}/newGid", verify=str(certs.ca), timeout=5).ok
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{s.http_port}/api/ping", timeout=5)
        with pytest.raises(requests.exceptions.SSLError):  # a CA that did not sign it
            requests.get(f"{s.base}/api/ping", verify=str(certs.other_ca), timeout=5)
        creds = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
        assert await _new_gid(s.grpc_target, creds)
        async with grpc.aio.insecure_channel(s.grpc_target) as ch:
            with pytest.raises(grpc.aio.AioRpcError):
                await dtmgimp_pb2_grpc.DtmStub(ch).NewGid(empty_pb2.Empty(), timeout=5)


async def test_client_certificates_required(certs: Certs, tmp_path: Path) -> None:
    s = _server(tmp_path, certs, {"Tls": _tls(certs, ClientCaFile=str(certs.ca))})
    s.cert = (str(certs.client_cert), str(certs.client_key))
    with s:
        assert requests.get(f"{s.url}/newGid", verify=s.verify, cert=s.cert, timeout=5).ok
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(f"{s.url}/newGid", verify=s.verify, timeout=5)
        ca = certs.ca.read_bytes()
        with_cert = grpc.ssl_channel_credentials(ca, certs.client_key.read_bytes(),
                                                 certs.client_cert.read_bytes())
        assert await _new_gid(s.grpc_target, with_cert)
        with pytest.raises(grpc.aio.AioRpcError):
            await _new_gid(s.grpc_target, grpc.ssl_channel_credentials(ca))


@pytest.fixture(scope="module")
def https_branch(certs: Certs) -> Iterator[str]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    with branch_stub(tls=ctx) as url:
        yield url


def _saga(gid: str, branch: str) -> dict[str, Any]:
    return {"gid": gid, "trans_type": "saga", "payloads": ["{}"],
            "steps": [{"action": f"{branch}/a", "compensate": f"{branch}/c"}]}


def test_https_branches_are_verified(certs: Certs, https_branch: str, tmp_path: Path) -> None:
    ok, bad = "tls-" + uuid.uuid4().hex, "tls-" + uuid.uuid4().hex
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    with ServerProcess(workdir=str(tmp_path / "a"),
                       extra={"Tls": {"BranchCaFile": str(certs.ca)}}) as s:
        r = requests.post(f"{s.url}/submit", json=_saga(ok, https_branch), timeout=10)
        assert r.ok, r.text
        s.wait_status(ok, "succeed")
    # without the CA the branch's certificate is not trusted: the call is never made
    with ServerProcess(workdir=str(tmp_path / "b")) as s:
        r = requests.post(f"{s.url}/submit", json=_saga(bad, https_branch), timeout=10)
        assert r.ok, r.text
        eventually(lambda: "CERTIFICATE_VERIFY_FAILED" in s.log(), timeout=10)
        assert s.status(bad) == "submitted", (s.query(bad), s.log()[-3000:])


@pytest.fixture(scope="module")
def tls_redis(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/test.sh installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
         "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "no", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certs.ca))
    try:
        eventually(lambda: client.ping(), timeout=10)
        yield port
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_redis_store_over_tls(certs: Certs, tls_redis: int, https_branch: str,
                              tmp_path: Path) -> None:
    gid = "tls-redis-" + uuid.uuid4().hex
    store = {"Driver": "redis", "Url": f"rediss://127.0.0.1:{tls_redis}/0"}
    tls = {"StoreCaFile": str(certs.ca), "BranchCaFile": str(certs.ca)}
    with ServerProcess(store=store, workdir=str(tmp_path), extra={"Tls": tls}) as s:
        assert requests.post(f"{s.url}/submit", json=_saga(gid, https_branch), timeout=10).ok
        s.wait_status(gid, "succeed")
    # the wrong CA: the server refuses to start (exit code 2, the store is unreachable)
    (tmp_path / "bad").mkdir()
    bad = ServerProcess(store=store, workdir=str(tmp_path / "bad"),
                        extra={"Tls": {"StoreCaFile": str(certs.other_ca)}})
    with pytest.raises(RuntimeError, match=r"store unavailable|CERTIFICATE"):
        bad.start(timeout=15)


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def tls_postgres(certs: Certs) -> Iterator[int]:
    """A private PostgreSQL cluster with ssl=on, on a free port (the shared test server is
    left as it is)."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries are not installed (scripts/test.sh does it)")
    import os
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="dtmx-pg-tls-"))
    data = root / "data"
    for name in ("server.pem", "server.key"):
        shutil.copy(getattr(certs, "server_cert" if name.endswith("pem") else "server_key"),
                    root / name)
    as_pg: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        as_pg = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        for f in root.iterdir():
            shutil.chown(f, "postgres")
    root.chmod(0o755)
    (root / "server.key").chmod(0o600)
    port = free_port()
    subprocess.run([*as_pg, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U",
                    "postgres", "--no-sync"], check=True, capture_output=True, timeout=120)
    opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c ssl=on -c fsync=off"
            f" -c ssl_cert_file={root / 'server.pem'} -c ssl_key_file={root / 'server.key'}")
    subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-w",
                    "-l", str(root / "log"), "start"], check=True, capture_output=True,
                   timeout=60)
    try:
        yield port
    finally:
        subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


async def _ssl_sessions(port: int) -> int:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres",
                                 database="postgres", ssl=False)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
            " WHERE s.ssl AND a.pid <> pg_backend_pid()"))
    finally:
        await conn.close()


async def test_postgres_store_over_tls(certs: Certs, tls_postgres: int, https_branch: str,
                                       tmp_path: Path) -> None:
    gid = "tls-pg-" + uuid.uuid4().hex
    store = {"Driver": "postgres", "Host": "127.0.0.1", "Port": tls_postgres,
             "User": "postgres", "Db": "postgres", "Schema": "dtmx_tls"}
    tls = {"StoreSslMode": "verify-full", "StoreCaFile": str(certs.ca),
           "BranchCaFile": str(certs.ca)}
    with ServerProcess(store=store, workdir=str(tmp_path), extra={"Tls": tls}) as s:
        r = requests.post(f"{s.url}/submit", json=_saga(gid, https_branch), timeout=10)
        assert r.ok
        s.wait_status(gid, "succeed")
        assert await _ssl_sessions(tls_postgres) >= 1  # the server's pooled connections
    (tmp_path / "bad").mkdir()
    bad = ServerProcess(store=store, workdir=str(tmp_path / "bad"), extra={"Tls": {
        "StoreSslMode": "verify-full", "StoreCaFile": str(certs.other_ca)}})
    with pytest.raises(RuntimeError, match=r"store unavailable|CERTIFICATE|certificate"):
        bad.start(timeout=15)


@pytest.fixture(scope="module")
def tls_mariadb(certs: Certs) -> Iterator[int]:
    """A private MariaDB with TLS on a free port (the shared test server is left alone)."""
    mariadbd, install = shutil.which("mariadbd"), shutil.which("mariadb-install-db")
    if mariadbd is None or install is None:
        pytest.skip("MariaDB server is not installed (scripts/test.sh installs it)")
    import os
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="dtmx-maria-tls-"))
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", "")
    subprocess.run([install, "--no-defaults", f"--datadir={root / 'data'}", f"--user={user}",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True, timeout=120)
    port = free_port()
    proc = subprocess.Popen(
        [mariadbd, "--no-defaults", f"--datadir={root / 'data'}", f"--user={user}",
         f"--port={port}", "--bind-address=127.0.0.1", f"--socket={root / 'sock'}",
         f"--pid-file={root / 'pid'}", f"--ssl-cert={certs.server_cert}",
         f"--ssl-key={certs.server_key}", f"--ssl-ca={certs.ca}", "--skip-log-bin",
         "--innodb-buffer-pool-size=16M"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        eventually(lambda: (root / "pid").exists(), timeout=30)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)


def test_mysql_store_over_tls(certs: Certs, tls_mariadb: int, https_branch: str,
                              tmp_path: Path) -> None:
    gid = "tls-my-" + uuid.uuid4().hex
    store = {"Driver": "mysql", "Host": "127.0.0.1", "Port": tls_mariadb, "User": "root",
             "Db": "dtmx_tls"}
    tls = {"StoreSslMode": "verify-full", "StoreCaFile": str(certs.ca),
           "BranchCaFile": str(certs.ca)}
    with ServerProcess(store=store, workdir=str(tmp_path), extra={"Tls": tls}) as s:
        assert requests.post(f"{s.url}/submit", json=_saga(gid, https_branch), timeout=10).ok
        s.wait_status(gid, "succeed")
    (tmp_path / "bad").mkdir()
    bad = ServerProcess(store=store, workdir=str(tmp_path / "bad"), extra={"Tls": {
        "StoreSslMode": "verify-full", "StoreCaFile": str(certs.other_ca)}})
    with pytest.raises(RuntimeError, match=r"store unavailable|CERTIFICATE|certificate"):
        bad.start(timeout=15)
