"""TLS contexts from the Tls block, without a server."""

from __future__ import annotations

import ssl

import pytest

from dtmx.errors import ConfigError
from dtmx.security.config import TlsSettings
from dtmx.security.tls import check, server_context, store_context


def test_store_ssl_modes() -> None:
    assert store_context(TlsSettings()) is None
    ctx = store_context(TlsSettings(StoreSslMode="require"))
    assert ctx is not None and ctx.verify_mode is ssl.CERT_NONE
    ctx = store_context(TlsSettings(StoreSslMode="verify-ca"))
    assert ctx is not None and ctx.verify_mode is ssl.CERT_REQUIRED and not ctx.check_hostname
    ctx = store_context(TlsSettings(StoreSslMode="VERIFY-FULL"))
    assert ctx is not None and ctx.check_hostname
    with pytest.raises(ConfigError, match="StoreSslMode"):
        store_context(TlsSettings(StoreSslMode="prefer"))


@pytest.mark.parametrize("tls,msg", [
    (TlsSettings(CertFile="/x.pem"), "go together"),
    (TlsSettings(ClientCaFile="/ca.pem"), "needs CertFile"),
    (TlsSettings(CertFile="/nonexistent.pem", KeyFile="/nonexistent.key"), "no such file"),
    (TlsSettings(BranchCaFile="/nonexistent.pem"), "BranchCaFile"),
])
def test_bad_tls_blocks(tls: TlsSettings, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        check(tls)


def test_plain_without_certificate() -> None:
    assert server_context(TlsSettings()) is None
