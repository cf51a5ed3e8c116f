"""Which role each API route needs. Pure data and lookups, no I/O.

Roles are ordered: a token of a higher role may do everything a lower one may. `None` means
the route is open (ping and health, so load balancers and probes need no token).
"""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    """What a token may do. Compare with `>=`: ADMIN > OPERATOR > CLIENT."""

    CLIENT = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        """`client`, `operator` or `admin` (any case); ValueError otherwise."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(r.name.lower() for r in cls)
            raise ValueError(f"role must be one of {names}, not {text!r}") from None

    @property
    def label(self) -> str:
        """The role's name as written in config and audit lines."""
        return self.name.lower()


#: What applications do with their own transactions.
_CLIENT = (
    "version", "newGid", "prepare", "submit", "abort", "registerBranch",
    "registerTccBranch", "registerXaBranch", "prepareWorkflow", "query",
    "json-rpc",  # /api/json-rpc: newGid, prepare, submit, abort, registerBranch
)
#: What operators do across transactions, topics and the server.
_OPERATOR = (
    "all", "forceStop", "resetCronTime", "resetNextCronTime", "subscribe", "unsubscribe",
    "topic", "scanKV", "queryKV", "metrics",
)
_OPEN = ("ping", "health")

HTTP_API_PREFIX = "/api/dtmsvr/"

#: Last path segment (first after the prefix for `topic/{name}`) -> role needed.
HTTP_ROLES: dict[str, Role | None] = {
    **{name: Role.CLIENT for name in _CLIENT},
    **{name: Role.OPERATOR for name in _OPERATOR},
    **{name: None for name in _OPEN},
}

#: `dtmgimp.Dtm` method -> role needed.
GRPC_ROLES: dict[str, Role] = {
    "NewGid": Role.CLIENT, "Submit": Role.CLIENT, "Prepare": Role.CLIENT,
    "Abort": Role.CLIENT, "RegisterBranch": Role.CLIENT, "PrepareWorkflow": Role.CLIENT,
    "Subscribe": Role.OPERATOR, "Unsubscribe": Role.OPERATOR, "DeleteTopic": Role.OPERATOR,
}

#: Services that stay open on the gRPC port: probes and the schema of the public API.
GRPC_OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                      "grpc.reflection.v1.ServerReflection")

#: Routes whose successful (or refused) use is written to the audit log.
AUDITED = frozenset({
    "forceStop", "resetCronTime", "resetNextCronTime", "subscribe", "unsubscribe", "topic",
    "Subscribe", "Unsubscribe", "DeleteTopic",
})


def http_route_name(path: str) -> str:
    """`/api/dtmsvr/topic/x` -> `topic`; `/api/ping` -> `ping`; other paths as they are."""
    if path.startswith(HTTP_API_PREFIX):
        return path[len(HTTP_API_PREFIX):].split("/", 1)[0]
    if path.startswith("/api/") and path.count("/") == 2:
        return path[len("/api/"):]
    return path


def http_role(path: str, default: Role | None = Role.ADMIN) -> Role | None:
    """The role a request to `path` needs; unknown paths need `default` (fail closed)."""
    return HTTP_ROLES.get(http_route_name(path), default)


def grpc_role(full_method: str) -> Role | None:
    """The role `/pkg.Service/Method` needs: None for health and reflection, ADMIN for a
    method this table does not know (fail closed)."""
    service, _, method = full_method.lstrip("/").partition("/")
    if service in GRPC_OPEN_SERVICES:
        return None
    if service == "dtmgimp.Dtm":
        return GRPC_ROLES.get(method, Role.ADMIN)
    return Role.ADMIN
