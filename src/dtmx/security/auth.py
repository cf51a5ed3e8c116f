"""API tokens: who is calling, and may they do this.

`Authenticator` holds the tokens of the `Auth:` settings (literal, from files, from environment
variables), checks an `Authorization: Bearer <token>` value against all of them in constant
time, and reloads them without a restart (`reload()`, called on SIGHUP and when a token file
changes). Tokens are kept only as SHA-256 digests; no token ever reaches a log line, an error
or a repr.

For other parts of the server (the admin UI, the operator CLI routes), the one call to make is
`Authenticator.authorize(authorization_header_value, Role.OPERATOR)`: it returns the caller's
`Principal` or raises `Unauthorized` (401) / `Forbidden` (403), both `DtmxError`s that the API
maps once. Inside a route guarded by `dtmx.security.guard`, `current_principal()` tells who
is calling.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dtmx.errors import ConfigError, Forbidden, Unauthorized
from dtmx.security.config import AuthSettings, TokenSettings
from dtmx.security.roles import Role

log = logging.getLogger("dtmx.auth")

#: Shorter tokens are refused at start: they can be guessed.
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the token's Name and Role ("anonymous"/ADMIN when Auth is off)."""

    name: str
    role: Role


ANONYMOUS = Principal("anonymous", Role.ADMIN)

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "dtmx_principal", default=ANONYMOUS
)


def current_principal() -> Principal:
    """The caller of the request being handled (set by the guard around every route)."""
    return _current.get()


def set_principal(p: Principal) -> contextvars.Token[Principal]:
    """Set the caller for the rest of this task (the guard does it)."""
    return _current.set(p)


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    role: Role
    digest: bytes = field(repr=False)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _split(text: str) -> list[str]:
    """Tokens of a file or variable: whitespace-separated; lines starting with # skipped."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.extend(line.split())
    return out


def _read(t: TokenSettings, env: Mapping[str, str]) -> list[str]:
    if t.Token:
        return [t.Token]
    if t.TokenFile:
        try:
            return _split(Path(t.TokenFile).read_text())
        except OSError as e:
            raise ConfigError(
                f"token {t.Name!r}: cannot read TokenFile {t.TokenFile}: {e.strerror}"
            ) from None
    if t.TokenEnv not in env:
        raise ConfigError(f"token {t.Name!r}: environment variable {t.TokenEnv} is not set")
    return _split(env[t.TokenEnv])


def load_entries(auth: AuthSettings, env: Mapping[str, str]) -> list[_Entry]:
    """Read every configured token; ConfigError (naming the token, never its value) if one
    source cannot be read, is empty, or holds a token shorter than MIN_TOKEN_LENGTH."""
    entries: list[_Entry] = []
    for t in auth.Tokens:
        values = _read(t, env)
        if not values:
            raise ConfigError(f"token {t.Name!r}: no token found in its source")
        for v in values:
            if len(v) < MIN_TOKEN_LENGTH:
                raise ConfigError(
                    f"token {t.Name!r}: a token must have at least {MIN_TOKEN_LENGTH} characters"
                )
            entries.append(_Entry(t.Name, Role.parse(t.Role), _digest(v)))
    return entries


def require(p: Principal, need: Role) -> None:
    """Forbidden unless `p`'s role is at least `need`."""
    if p.role < need:
        raise Forbidden(f"role {p.role.label} may not do this; it needs {need.label}")


def bearer(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` value; '' if there is none."""
    if not authorization:
        return ""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


class Authenticator:
    """The configured tokens and the checks against them. With `auth=None` it is open:
    every caller is `ANONYMOUS` (an admin), as in DTM."""

    def __init__(self, auth: AuthSettings | None, env: Mapping[str, str] | None = None) -> None:
        self.settings = auth
        self._env = os.environ if env is None else env
        self._entries: list[_Entry] = load_entries(auth, self._env) if auth else []
        self._stamps = self._file_stamps()

    @property
    def enabled(self) -> bool:
        """Whether callers must present a token."""
        return self.settings is not None

    def reload(self) -> bool:
        """Read the tokens again (rotation). On a failure the tokens in force stay, and the
        failure is logged; returns whether the new set was taken."""
        if self.settings is None:
            return False
        self._stamps = self._file_stamps()
        try:
            entries = load_entries(self.settings, self._env)
        except ConfigError as e:
            log.warning("token reload failed, keeping the tokens in force: %s", e.message)
            return False
        self._entries = entries
        log.info("tokens reloaded: %d valid for %d names", len(entries),
                 len({e.name for e in entries}))
        return True

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller whose token this `Authorization` value carries; Unauthorized if none
        matches. Every configured token is compared (constant time, no early exit)."""
        if self.settings is None:
            return ANONYMOUS
        token = bearer(authorization)
        if not token:
            raise Unauthorized()
        presented = _digest(token)
        found: _Entry | None = None
        for e in self._entries:
            if hmac.compare_digest(e.digest, presented):
                found = e
        if found is None:
            raise Unauthorized("the API token is not valid (Authorization: Bearer <token>)")
        return Principal(found.name, found.role)

    def authorize(self, authorization: str | None, need: Role | None) -> Principal:
        """The caller, if their role is at least `need` (None: open to anyone, no token
        needed). Raises Unauthorized (no or unknown token) or Forbidden (role too small)."""
        if need is None:
            return ANONYMOUS if self.settings is None else Principal("anonymous", Role.CLIENT)
        p = self.authenticate(authorization)
        require(p, need)
        return p

    def _file_stamps(self) -> dict[str, tuple[float, int] | None]:
        out: dict[str, tuple[float, int] | None] = {}
        for t in self.settings.Tokens if self.settings else ():
            if t.TokenFile:
                try:
                    st = os.stat(t.TokenFile)
                    out[t.TokenFile] = (st.st_mtime, st.st_size)
                except OSError:
                    out[t.TokenFile] = None
        return out

    async def watch(self) -> None:
        """Reload whenever a token file changes (checked every Auth.ReloadInterval seconds).
        Runs until cancelled."""
        if self.settings is None or not self._stamps:
            return
        while True:
            await asyncio.sleep(self.settings.ReloadInterval)
            if self._file_stamps() != self._stamps:
                self.reload()
