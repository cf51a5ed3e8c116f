"""A local alert-webhook listener: records every POST, refuses or holds some on request."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.util import free_port


class WebhookListener:
    """Listens on 127.0.0.1 at `url`, whose `userinfo` and `path` may carry secrets.

    The first `refusals` POSTs about each gid are answered 500 (`refuse[gid]` overrides that
    per gid); while `hang` is set a POST gets no answer until `release` is set (or 60 s).
    """

    def __init__(self, *, refusals: int = 0, userinfo: str = "",
                 path: str = "/dtm-hook") -> None:
        self.posts: list[tuple[float, dict[str, Any], int]] = []  # (arrival, body, status)
        self.refusals = refusals
        self.refuse: dict[str, int] = {}
        self.hang = threading.Event()
        self.release = threading.Event()
        self.hanging = 0
        lock = threading.Lock()
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.monotonic()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                gid = body["gid"]
                with lock:
                    seen = 1 + len(me.arrivals(gid))
                    status = 200 if seen > me.refuse.get(gid, me.refusals) else 500
                    me.posts.append((arrived, body, status))
                    held = me.hang.is_set()
                    me.hanging += held
                if held:
                    me.release.wait(60)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.http.daemon_threads = True
        port = self.http.server_address[1]
        self.url = f"http://{userinfo}{'@' if userinfo else ''}127.0.0.1:{port}{path}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def arrivals(self, gid: str) -> list[float]:
        """When each POST about `gid` arrived (monotonic seconds)."""
        return [t for t, body, _ in self.posts if body["gid"] == gid]

    def of(self, gid: str) -> list[dict[str, Any]]:
        """The bodies about `gid` that were accepted (answered 200)."""
        return [body for _, body, status in self.posts if body["gid"] == gid and status == 200]

    def close(self) -> None:
        """Answer any held POST and stop listening."""
        self.release.set()
        self.http.shutdown()
