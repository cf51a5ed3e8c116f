"""TLS contexts from the `Tls:` settings: the API's (HTTP and gRPC), the branch calls', the
stores'.

- `CertFile` + `KeyFile`: the HTTP and gRPC APIs serve TLS only (clients use https:// and a
  secure gRPC channel). `ClientCaFile` in addition: clients must show a certificate that this
  CA signed (mutual TLS).
- `BranchCaFile`: https:// branch calls verify the branch's certificate against this bundle
  (by default against the system's; verification is never turned off).
- `StoreCaFile`: the CA for store connections with TLS (`rediss://`; PostgreSQL/MySQL `ssl`).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from dtmx.errors import ConfigError
from dtmx.security.config import TlsSettings


def _need(path: str, what: str) -> str:
    if not Path(path).is_file():
        raise ConfigError(f"Tls.{what}: no such file {path}")
    return path


def server_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """The HTTP API's TLS context; None when Tls has no CertFile (plain HTTP, as DTM)."""
    if not tls.CertFile:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(_need(tls.CertFile, "CertFile"), _need(tls.KeyFile, "KeyFile"))
        if tls.ClientCaFile:
            ctx.load_verify_locations(_need(tls.ClientCaFile, "ClientCaFile"))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except ssl.SSLError as e:
        raise ConfigError(f"Tls: cannot load the certificate or key: {e.reason}") from None
    return ctx


def grpc_credentials(tls: TlsSettings) -> object | None:
    """`grpc.ssl_server_credentials` for the gRPC API; None without a CertFile."""
    if not tls.CertFile:
        return None
    import grpc

    key = Path(_need(tls.KeyFile, "KeyFile")).read_bytes()
    chain = Path(_need(tls.CertFile, "CertFile")).read_bytes()
    root = Path(_need(tls.ClientCaFile, "ClientCaFile")).read_bytes() if tls.ClientCaFile else None
    creds: object = grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=root, require_client_auth=root is not None
    )
    return creds


def client_context(ca_file: str, what: str) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or only `ca_file` when given."""
    ctx = ssl.create_default_context(cafile=_need(ca_file, what) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def branch_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """The context for https:// branch calls; None: the client's default (system CAs)."""
    return client_context(tls.BranchCaFile, "BranchCaFile") if tls.BranchCaFile else None


SSL_MODES = ("", "require", "verify-ca", "verify-full")


def store_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """The context for a SQL store's connections by `StoreSslMode`; None: no TLS asked."""
    mode = tls.StoreSslMode.lower()
    if not mode:
        return None
    if mode not in SSL_MODES:
        raise ConfigError(f"Tls.StoreSslMode must be one of {', '.join(SSL_MODES[1:])}")
    if mode == "require":  # encryption against eavesdropping only, as libpq's sslmode
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = client_context(tls.StoreCaFile, "StoreCaFile")
    ctx.check_hostname = mode == "verify-full"
    return ctx


def check(tls: TlsSettings) -> None:
    """ConfigError for an incomplete or unreadable Tls block (at start, before serving)."""
    if bool(tls.CertFile) != bool(tls.KeyFile):
        raise ConfigError("Tls: CertFile and KeyFile go together")
    if tls.ClientCaFile and not tls.CertFile:
        raise ConfigError("Tls.ClientCaFile needs CertFile and KeyFile (the API serves TLS)")
    server_context(tls)
    branch_context(tls)
    if tls.StoreCaFile:
        _need(tls.StoreCaFile, "StoreCaFile")
    store_context(tls)
