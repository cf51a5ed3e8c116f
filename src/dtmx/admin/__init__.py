"""The admin web UI (`{AdminBasePath}/admin`) and its two thin JSON routes.

The UI is three static files (`static/`): an HTML shell, a stylesheet and a script that
reads everything through the server's HTTP API (`/api/dtmsvr/...`) plus `/api/admin/servers`
(the servers sharing the store, from their heartbeats) and `/api/admin/me` (the caller's
role, so the UI can hide what the role may not do). Nothing is fetched from elsewhere.
"""

from __future__ import annotations

from dtmx.admin.routes import mount

__all__ = ["mount"]
