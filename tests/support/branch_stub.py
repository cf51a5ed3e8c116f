"""A minimal branch service on a thread (stdlib HTTP server), optionally over TLS: answers
every POST with what `answer(path)` returns and records the request headers."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[str], tuple[int, bytes]]
SUCCESS = (200, b'{"dtm_result": "SUCCESS"}')


@contextmanager
def branch_stub(answer: Answer = lambda path: SUCCESS,
                tls: ssl.SSLContext | None = None,
                seen: list[dict[str, str]] | None = None) -> Iterator[str]:
    """Serve on 127.0.0.1 (a free port); yields the base URL (https when `tls`)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if seen is not None:
                seen.append(dict(self.headers))
            status, body = answer(self.path)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        # the handshake in the handler's thread, not in accept(): a client that stops
        # half-way through it (a refused certificate) cannot stall the other connections
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True,
                                       do_handshake_on_connect=False)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
