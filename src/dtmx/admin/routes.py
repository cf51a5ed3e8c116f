"""Routes of the admin UI: its static files, the server list and the caller's role."""

from __future__ import annotations

from dataclasses import asdict
from importlib import resources
from typing import Any

from dtmx.api.serialize import iso
from dtmx.clock import Clock
from dtmx.errors import NotFound
from dtmx.heartbeat import list_servers
from dtmx.net.api_server import Request, Response, Routes, json_response
from dtmx.security.auth import current_principal
from dtmx.security.guard import Guard
from dtmx.security.roles import Role
from dtmx.stores.base import Store

_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
}
ASSETS = ("app.js", "app.css")
#: The JSON routes (method, path), described in the OpenAPI document with the API's; the
#: UI's static files are not part of it.
JSON_ROUTES = (("GET", "/api/admin/servers"), ("GET", "/api/admin/me"))


def ui_prefix(base_path: str) -> str:
    """Where the UI is served: DTM's AdminBasePath (a path prefix, '' by default) + /admin."""
    return base_path.rstrip("/") + "/admin"


def _load(name: str) -> bytes:
    return (resources.files("dtmx.admin") / "static" / name).read_bytes()


def _static(prefix: str) -> dict[str, Response]:
    """The files, read once; the page names its assets by absolute path under `prefix`."""
    out = {name: Response(_load(name), content_type=_TYPES[name.rsplit(".", 1)[1]])
           for name in ASSETS}
    page = _load("index.html").replace(b"__BASE__", prefix.encode())
    out["index.html"] = Response(page, content_type=_TYPES["html"])
    return out


def mount(
    routes: Routes, *, base_path: str, store: Store, clock: Clock, guard: Guard | None = None
) -> None:
    """Add the UI under `{base_path}/admin` and its JSON routes under /api/admin.

    The static files are open (they hold no data; the page asks for a token when the API
    answers 401); the JSON routes are behind `guard`: the server list needs an operator,
    `me` any valid token."""
    prefix = ui_prefix(base_path)
    files = _static(prefix)

    async def page(r: Request) -> Response:
        return files["index.html"]

    async def asset(r: Request) -> Response:
        found = files.get(r.match_info.get("name", ""))
        if found is None:
            raise NotFound(f"no such file: {r.path}")
        return found

    async def servers(r: Request) -> Response:
        now = clock.now()
        out: list[dict[str, Any]] = []
        for rec in await list_servers(store):
            d = asdict(rec)
            d.update(health=rec.health(now).value, age=round(max(0.0, now - rec.beat), 1),
                     started=iso(rec.started), beat=iso(rec.beat))
            out.append(d)
        return json_response({"now": iso(now), "servers": out})

    async def me(r: Request) -> Response:
        auth = guard is not None and guard.auth.enabled
        if not auth:  # without Auth every caller may do everything: no role to report
            return json_response({"auth": False, "name": None, "role": None})
        p = current_principal()
        return json_response({"auth": True, "name": p.name, "role": p.role.label})

    def guarded(path: str, fn: Any, need: Role) -> Any:
        return guard.http(path, fn, need=need) if guard else fn

    routes.add("GET", prefix, page)
    routes.add("GET", f"{prefix}/", page)
    routes.add("GET", f"{prefix}/{{name}}", asset)
    handlers = {"/api/admin/servers": (servers, Role.OPERATOR), "/api/admin/me": (me, Role.CLIENT)}
    for method, path in JSON_ROUTES:
        fn, need = handlers[path]
        routes.add(method, path, guarded(path, fn, need))
