"""The pure parts of discovery: etcd URLs, go-zero's key layout, the endpoint table.

Layout in etcd is go-zero's: an instance of service `<key>` is the key
`<key>/<lease id in decimal>` whose value is its `host:port`, attached to a lease the
instance keeps alive. Readers list the prefix `<key>/` and watch it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dtmx.errors import DtmxError

DEFAULT_ETCD_PORT = 2379
DEFAULT_TTL = 10
DEFAULT_CALL_TIMEOUT = 3.0


class DiscoveryError(DtmxError):
    """Service discovery failed."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class EtcdTarget:
    """An `etcd://host:port[,host:port...]/key` URL, split."""

    hosts: tuple[str, ...]  # "host:port", at least one
    key: str  # the service key, without leading or trailing "/"

    @property
    def address(self) -> str:
        """The etcd endpoint used (the first host: aetcd speaks to one endpoint)."""
        return self.hosts[0]

    @property
    def prefix(self) -> str:
        """Where the instances of this service live: `<key>/`."""
        return service_prefix(self.key)

    def url(self) -> str:
        """The target as an etcd:// URL again (every host)."""
        return f"etcd://{','.join(self.hosts)}/{self.key}"


def parse_etcd_url(url: str) -> EtcdTarget:
    """Parse `etcd://host[:port][,host[:port]]/key`; raises DiscoveryError when malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "etcd":
        raise DiscoveryError(f"not an etcd URL: {url!r} (expected etcd://host:2379/key)")
    hosts_part, _, key = rest.partition("/")
    key = key.strip("/")
    hosts = tuple(with_port(h.strip()) for h in hosts_part.split(",") if h.strip())
    if not hosts or not key:
        raise DiscoveryError(f"bad etcd URL {url!r}: expected etcd://host:2379/key")
    return EtcdTarget(hosts=hosts, key=key)


def with_port(host: str) -> str:
    """`host` with etcd's default port if it names none."""
    if host.startswith("["):  # [ipv6]:port
        return host if "]:" in host else f"{host}:{DEFAULT_ETCD_PORT}"
    return host if ":" in host else f"{host}:{DEFAULT_ETCD_PORT}"


def split_address(address: str) -> tuple[str, int]:
    """`host:port` -> (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def service_prefix(key: str) -> str:
    """The key prefix under which the instances of `key` are registered."""
    return key.rstrip("/") + "/"


def registration_key(key: str, lease_id: int) -> str:
    """go-zero's key for one instance: `<key>/<lease id in decimal>`."""
    return f"{service_prefix(key)}{lease_id}"


@dataclass(slots=True)
class EndpointTable:
    """The registered instances of one service, and a round-robin pick over them.

    Several keys may carry the same endpoint (an instance that re-registered before its
    old lease expired): it is listed, and picked, once.
    """

    entries: dict[str, str] = field(default_factory=dict)  # etcd key -> endpoint
    _endpoints: list[str] = field(default_factory=list)
    _next: int = 0

    def replace(self, entries: dict[str, str]) -> None:
        """Take a full listing (after a get)."""
        self.entries = {k: v for k, v in entries.items() if v}
        self._rebuild()

    def put(self, key: str, endpoint: str) -> None:
        """A key was put (an empty endpoint counts as a delete)."""
        if endpoint:
            self.entries[key] = endpoint
        else:
            self.entries.pop(key, None)
        self._rebuild()

    def delete(self, key: str) -> None:
        """A key was deleted (its lease ended or it was revoked)."""
        if self.entries.pop(key, None) is not None:
            self._rebuild()

    def _rebuild(self) -> None:
        self._endpoints = sorted(set(self.entries.values()))

    @property
    def endpoints(self) -> list[str]:
        """Distinct live endpoints, sorted."""
        return list(self._endpoints)

    def pick(self) -> str | None:
        """The next endpoint in turn, None when there is none."""
        if not self._endpoints:
            return None
        self._next = (self._next + 1) % len(self._endpoints)
        return self._endpoints[self._next]
