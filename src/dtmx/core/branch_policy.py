"""Where the server may send branch calls: the rules of `BranchPolicy`, pure (no I/O).

A URL is checked twice: when it enters (submit, prepare, registerBranch, subscribe,
query_prepared), on what the URL says; and when the server connects, on each address its
host resolved to, so a name that later resolves elsewhere (DNS rebinding) cannot pass.

Rules are text, each one of:
- a CIDR or a single address: `169.254.0.0/16`, `fe80::/10`, `127.0.0.1`;
- a host name, with `*.` for any subdomain: `metadata.google.internal`, `*.internal`;
- `host:port`, either part `*`: `127.0.0.1:6379`, `*:6379`, `redis.local:*`, `[::1]:80`.

Order: a scheme not in `schemes` is refused; then the first `deny` rule that matches refuses;
then, if `allow` is not empty, one of its rules must match. An address rule (CIDR) can only
judge an address: a URL naming a host is judged on its addresses at connect time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

from dtmx.errors import BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Link-local ranges and the cloud metadata endpoints: credentials live there.
DEFAULT_DENY = (
    "169.254.0.0/16", "fe80::/10", "fd00:ec2::254", "100.100.100.200",
    "metadata.google.internal", "metadata.goog", "instance-data.ec2.internal",
)
DEFAULT_SCHEMES = ("http", "https", "grpc", "etcd")


class RuleKind(StrEnum):
    """What a BranchPolicy rule matches: a network, a host, or a host and port."""

    NETWORK = "network"
    HOST = "host"
    HOST_PORT = "host:port"


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed rule; `text` is how the configuration wrote it (errors name it)."""

    text: str
    kind: RuleKind
    host: str = ""  # lower case, no trailing dot; "*" any; "*.x" subdomains of x
    port: int | None = None  # None: any port
    network: IPNetwork | None = None

    @staticmethod
    def parse(text: str) -> Rule:
        """ValueError with a reason when `text` is none of the forms above."""
        t = text.strip()
        if not t:
            raise ValueError("empty rule")
        try:
            return Rule(t, RuleKind.NETWORK, network=ipaddress.ip_network(t, strict=False))
        except ValueError:
            pass
        host, port = t, None
        if t.startswith("["):  # [v6]:port
            close = t.find("]")
            if close < 0 or not t[close + 1:].startswith(":"):
                raise ValueError(f"rule {t!r}: expected [address]:port")
            host, port_text = t[1:close], t[close + 2:]
            return Rule(t, RuleKind.HOST_PORT, host=_norm(host), port=_port(t, port_text))
        if t.count(":") == 1:
            host, port_text = t.split(":")
            port = _port(t, port_text)
            return Rule(t, RuleKind.HOST_PORT, host=_norm(host) or "*", port=port)
        if ":" in t or "/" in t or any(c.isspace() for c in t):
            raise ValueError(f"rule {t!r}: not a CIDR, a host name or host:port")
        return Rule(t, RuleKind.HOST, host=_norm(host))

    def matches(self, host: str, port: int, ip: IPAddress | None) -> bool:
        """Whether this rule covers a connection to `host`:`port` (at address `ip`, when
        known; a host that is an address literal is its own `ip`)."""
        if self.kind is RuleKind.NETWORK:
            assert self.network is not None
            return ip is not None and any(
                a.version == self.network.version and a in self.network for a in _forms(ip)
            )
        if self.port is not None and self.port != port:
            return False
        if self.host == "*":
            return True
        names = {host}
        if ip is not None:
            names.update(str(a) for a in _forms(ip))
        if self.host.startswith("*."):
            return any(n.endswith(self.host[1:]) for n in names)
        return self.host in names


def _port(rule: str, text: str) -> int | None:
    if text == "*":
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"rule {rule!r}: port must be 1-65535 or *")
    return int(text)


def _norm(host: str) -> str:
    return host.strip().lower().rstrip(".").strip("[]")


def _forms(ip: IPAddress) -> tuple[IPAddress, ...]:
    """The address, plus the IPv4 address an IPv4-mapped/compatible IPv6 one carries (so
    `::ffff:169.254.169.254` is judged as 169.254.169.254)."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return (ip, mapped)
    return (ip,)


def literal_ip(host: str) -> IPAddress | None:
    """The address a host written as an address literal stands for; None for a name."""
    try:
        return ipaddress.ip_address(_norm(host).split("%", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a branch URL sends the server: scheme, host (lower case), port."""

    scheme: str
    host: str
    port: int


_DEFAULT_PORTS = {"http": 80, "https": 443, "etcd": 2379}


def endpoint_of(url: str) -> Endpoint:
    """The endpoint of a branch URL: http(s)://host[:port]/..., etcd://host:port/...,
    or a gRPC target `host:port/pkg.Service/Method` (scheme "grpc").
    ValueError when no host can be read from it."""
    if "://" in url:
        try:
            u = urlsplit(url)
            port = u.port
        except ValueError as e:
            raise ValueError(f"malformed URL: {e}") from None
        scheme = u.scheme.lower()
        host = _norm(u.hostname or "")
        if not host:
            raise ValueError("no host in URL")
        return Endpoint(scheme, host, port or _DEFAULT_PORTS.get(scheme, 0))
    try:
        host, port = split_host_port(url.split("/", 1)[0])
    except ValueError:
        raise ValueError("a gRPC branch URL is host:port/package.Service/Method") from None
    return Endpoint("grpc", _norm(host), port)


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); ValueError otherwise."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class Violation:
    """Why a URL or address is refused; `rule` is the rule text (or what was missing)."""

    url: str
    rule: str
    reason: str

    def message(self) -> str:
        """The 400 message: the URL, why, and the rule."""
        return f"branch URL {self.url!r} refused by BranchPolicy: {self.reason} ({self.rule})"


@dataclass(frozen=True, slots=True)
class BranchPolicy:
    """The rules in force. The default denies link-local and metadata addresses only."""

    schemes: frozenset[str] = frozenset(DEFAULT_SCHEMES)
    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = field(default_factory=lambda: tuple(map(Rule.parse, DEFAULT_DENY)))
    #: Entry-time verdicts by URL (a memo, not part of the value). Kept on the policy: a
    #: cache keyed by (policy, url) hashed every rule of the policy on each URL checked.
    _verdicts: dict[str, Violation | None] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)

    @staticmethod
    def build(*, schemes: tuple[str, ...] | None = None, allow: tuple[str, ...] = (),
              deny: tuple[str, ...] = (), deny_defaults: bool = True) -> BranchPolicy:
        """From configuration text; ValueError naming a rule that cannot be parsed."""
        rules = (DEFAULT_DENY if deny_defaults else ()) + tuple(deny)
        return BranchPolicy(
            schemes=frozenset(s.lower() for s in (schemes or DEFAULT_SCHEMES)),
            allow=tuple(Rule.parse(r) for r in allow),
            deny=tuple(Rule.parse(r) for r in rules),
        )

    def check_url(self, url: str) -> Violation | None:
        """Entry-time check of a branch URL on what it says (an address literal is judged
        as an address; a name's addresses are judged at connect time)."""
        try:
            ep = endpoint_of(url)
        except ValueError as e:
            return Violation(url, "a readable URL", str(e))
        if ep.scheme not in self.schemes:
            return Violation(url, "Schemes: " + ", ".join(sorted(self.schemes)),
                             f"scheme {ep.scheme!r} is not allowed")
        ip = literal_ip(ep.host)
        return self._judge(url, ep.host, ep.port, ip, final=ip is not None)

    def check_address(self, url: str, host: str, port: int, ip: str) -> Violation | None:
        """Connect-time check: `host`:`port` resolved to `ip`."""
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return Violation(url, "a resolved address", f"{ip!r} is not an address")
        return self._judge(url, _norm(host), port, addr, final=True)

    def _judge(self, url: str, host: str, port: int, ip: IPAddress | None, *,
               final: bool) -> Violation | None:
        where = f"{ip}" if ip is not None and str(ip) != host else host
        for rule in self.deny:
            if rule.matches(host, port, ip):
                return Violation(url, f"Deny: {rule.text}", f"{where}:{port} is denied")
        if not self.allow:
            return None
        for rule in self.allow:
            if rule.matches(host, port, ip):
                return None
        if not final and any(r.kind is RuleKind.NETWORK for r in self.allow):
            return None  # an allowed network may hold the name's addresses: judged later
        return Violation(url, "Allow", f"{where}:{port} matches no Allow rule")


#: URLs whose verdicts a policy keeps; past it the memo starts again.
_VERDICTS_KEPT = 4096


def _cached(policy: BranchPolicy, url: str) -> Violation | None:
    memo = policy._verdicts
    try:
        return memo[url]
    except KeyError:
        pass
    if len(memo) >= _VERDICTS_KEPT:
        memo.clear()
    v = memo[url] = policy.check_url(url)
    return v


def refuse_denied(policy: BranchPolicy, urls: Iterable[str]) -> None:
    """Entry-time check of the branch URLs of a request: BadRequest (400) naming the first
    refused URL and the rule. Empty URLs (a branch with nothing to call) pass."""
    for url in urls:
        if url:
            v = _cached(policy, url)
            if v is not None:
                raise BadRequest(v.message())
