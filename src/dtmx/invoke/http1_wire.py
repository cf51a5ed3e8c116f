"""HTTP/1.1 bytes for branch calls: URL targets, request building, a response parser.

Pure: no sockets, no event loop. `http1.py` carries these bytes over pooled connections.
Only what a branch call needs is supported; anything else (https, user info in the URL)
is reported as "not ours" so the caller can hand the URL to aiohttp instead.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, urlsplit

# a response head larger than this is not an HTTP server we want to talk to
MAX_HEAD = 64 * 1024
# branch answers are tiny; this only stops a runaway body from eating memory
MAX_BODY = 16 * 1024 * 1024

_QUERY_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")
# RFC 9110 token characters for header names
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# a header value may hold anything printable (and tabs), never CR, LF or NUL
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# set by the client itself: a branch header must not change how the message is framed
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_USER_AGENT = b"User-Agent: dtmx\r\n"
_JSON = b"Content-Type: application/json\r\n"


class HttpProtocolError(Exception):
    """The peer sent something that is not a valid HTTP/1.x response."""


class HeaderError(ValueError):
    """A branch header that cannot be sent (bad name, or CR/LF/NUL in the value)."""


@dataclass(slots=True, frozen=True)
class Target:
    """Where one branch URL goes: the connection key and the fixed parts of the request."""

    host: str
    port: int
    # the request target up to where our query parameters go: path "?" [existing query "&"]
    path_q: bytes
    # the Host and User-Agent lines
    head: bytes

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)


def parse_target(url: str) -> Target | None:
    """Split an http:// URL into a Target; None when it is not a plain http URL we handle."""
    if not url.startswith("http://"):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        return None
    host = parts.hostname
    if not host or "@" in parts.netloc or not parts.netloc.isascii():
        return None
    host_header = parts.netloc  # as written, port included when given (Go does the same)
    if any(c in host_header for c in "\r\n\x00 "):
        return None
    path = _requote(parts.path or "/", safe="/!$&'()*+,;=:@%-._~")
    if not path.startswith("/"):
        path = "/" + path
    query = _requote(parts.query, safe="/?!$&'()*+,;=:@%-._~")
    path_q = f"{path}?{query}&" if query else f"{path}?"
    head = b"Host: " + host_header.encode("ascii") + b"\r\n" + _USER_AGENT
    return Target(host=host, port=port, path_q=path_q.encode("ascii"), head=head)


def _requote(s: str, *, safe: str) -> str:
    """Percent-encode what may not appear raw, keeping escapes that are already there."""
    return quote(_LONE_PERCENT.sub("%25", s), safe=safe)


def query_value(v: str) -> str:
    """Encode one query value as Go's url.QueryEscape does (space as '+')."""
    if _QUERY_SAFE.fullmatch(v):
        return v
    return quote_plus(v, safe="")


def dtm_query(gid: str, trans_type: str, branch_id: str, op: str) -> bytes:
    """DTM's four query parameters, encoded."""
    return (
        f"gid={query_value(gid)}&trans_type={query_value(trans_type)}"
        f"&branch_id={query_value(branch_id)}&op={query_value(op)}"
    ).encode("ascii")


def header_lines(headers: Mapping[str, str]) -> bytes:
    """Content-Type (unless a branch header sets it) and the branch headers, validated.

    Raises HeaderError for a name that is not a token or a value holding CR, LF or NUL:
    sending it would let a payload inject headers or a second request.
    """
    if not headers:
        return _JSON
    out = []
    content_type = False
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise HeaderError(f"invalid header name {name!r}")
        value = str(value)
        if _BAD_VALUE.search(value):
            raise HeaderError(f"invalid value for header {name}")
        lower = name.lower()
        if lower in _RESERVED:  # like Go's net/http: framing is the client's business
            continue
        content_type = content_type or lower == "content-type"
        out.append(f"{name}: {value.strip()}\r\n".encode())
    if not content_type:
        out.insert(0, _JSON)
    return b"".join(out)


def build_head(
    method: bytes, target: Target, query: bytes, headers: bytes, body_length: int | None
) -> bytes:
    """The request head; the body (if any) follows it on the wire.

    `body_length` None means no body at all (GET); 0 is a POST with Content-Length 0.
    """
    end = b"\r\n" if body_length is None else b"Content-Length: %d\r\n\r\n" % body_length
    return b"".join(
        (method, b" ", target.path_q, query, b" HTTP/1.1\r\n", target.head, headers, end)
    )


# parser states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _EOF, _DONE = range(8)


class ResponseParser:
    """Incremental parser of one HTTP/1.x response: feed bytes until it says done.

    Handles Content-Length, chunked and read-until-close bodies, skips 1xx interim
    responses, gzip/deflate bodies (which we never ask for, but a server may send).
    """

    __slots__ = (
        "_buf", "_chunk_left", "_encoding", "_left", "_parts", "_state", "keep_alive", "status",
    )

    def __init__(self) -> None:
        self._buf = b""
        self._state = _HEAD
        self._left = 0
        self._chunk_left = 0
        self._parts: list[bytes] = []
        self._encoding = b""
        self.status = 0
        self.keep_alive = False

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def reads_until_close(self) -> bool:
        """True when the body has no length and ends when the server closes."""
        return self._state == _EOF

    @property
    def body(self) -> bytes:
        """The whole body, decompressed if the server compressed it."""
        parts = self._parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        encoding = self._encoding
        if not encoding or encoding == b"identity":
            return data
        try:
            if encoding in (b"gzip", b"x-gzip"):
                return zlib.decompress(data, 16 + zlib.MAX_WBITS)
            if encoding == b"deflate":
                try:
                    return zlib.decompress(data)
                except zlib.error:  # raw deflate without the zlib wrapper, as some send
                    return zlib.decompress(data, -zlib.MAX_WBITS)
        except zlib.error as e:
            raise HttpProtocolError(f"bad {encoding.decode('latin-1')} body: {e}") from None
        return data  # an encoding we cannot undo: classify still sees the bytes

    def feed(self, data: bytes) -> bool:
        """Take more bytes; True once the response is complete. Raises HttpProtocolError."""
        state = self._state
        if state == _LENGTH and not self._buf:  # the common case: the body comes in pieces
            n = self._left
            if len(data) >= n:
                if len(data) > n:
                    raise HttpProtocolError("data after the end of the response")
                self._parts.append(data)
                self._state = _DONE
                return True
            self._parts.append(data)
            self._left = n - len(data)
            return False
        if state == _EOF:
            self._add_body(data)
            return False
        if state == _DONE:
            raise HttpProtocolError("data after the end of the response")
        self._buf = self._buf + data if self._buf else data
        return self._run()

    def feed_eof(self) -> bool:
        """The server closed; True if that completes the response (read-until-close)."""
        if self._state == _EOF:
            self._state = _DONE
            return True
        return self._state == _DONE

    def _add_body(self, data: bytes) -> None:
        self._left += len(data)
        if self._left > MAX_BODY:
            raise HttpProtocolError("response body too large")
        self._parts.append(data)

    def _run(self) -> bool:
        while True:
            state = self._state
            buf = self._buf
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise HttpProtocolError("response head too large")
                    return False
                self._buf = buf[end + 4 :]
                self._head(buf[:end])
            elif state == _LENGTH:
                n = self._left
                if len(buf) > n:
                    raise HttpProtocolError("data after the end of the response")
                if buf:
                    self._parts.append(buf)
                    self._buf = b""
                self._left = n - len(buf)
                if self._left == 0:
                    self._state = _DONE
                    return True
                return False
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise HttpProtocolError("chunk size line too long")
                    return False
                size_text = buf[:end].split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise HttpProtocolError(f"bad chunk size {size_text[:20]!r}") from None
                if size < 0:
                    raise HttpProtocolError("bad chunk size")
                self._buf = buf[end + 2 :]
                if size == 0:
                    self._state = _TRAILER
                else:
                    self._chunk_left = size
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if not buf:
                    return False
                take = buf[: self._chunk_left]
                self._add_body(take)
                self._chunk_left -= len(take)
                self._buf = buf[len(take) :]
                if self._chunk_left == 0:
                    self._state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if len(buf) < 2:
                    return False
                if buf[:2] != b"\r\n":
                    raise HttpProtocolError("missing CRLF after a chunk")
                self._buf = buf[2:]
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                if buf.startswith(b"\r\n"):
                    rest = buf[2:]
                else:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > MAX_HEAD:
                            raise HttpProtocolError("trailer too large")
                        return False
                    rest = buf[end + 4 :]
                if rest:
                    raise HttpProtocolError("data after the end of the response")
                self._buf = b""
                self._state = _DONE
                return True
            elif state == _EOF:
                if buf:
                    self._add_body(buf)
                    self._buf = b""
                return False
            else:
                if buf:
                    raise HttpProtocolError("data after the end of the response")
                return True

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status_line = lines[0]
        if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
            raise HttpProtocolError(f"bad status line {status_line[:40]!r}")
        try:
            status = int(status_line[9:12])
        except ValueError:
            raise HttpProtocolError(f"bad status line {status_line[:40]!r}") from None
        if status < 100 or status > 999 or status_line[12:13] not in (b"", b" "):
            raise HttpProtocolError(f"bad status line {status_line[:40]!r}")
        http10 = status_line[7:8] == b"0"
        length: int | None = None
        chunked = False
        connection = b""
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise HttpProtocolError(f"bad header line {line[:40]!r}")
            name = name.lower()
            if name == b"content-length":
                try:
                    n = int(value)
                except ValueError:
                    raise HttpProtocolError("bad Content-Length") from None
                if n < 0 or (length is not None and n != length):
                    raise HttpProtocolError("bad Content-Length")
                length = n
            elif name == b"transfer-encoding":
                chunked = value.strip().lower().endswith(b"chunked")
            elif name == b"connection":
                connection = value.lower()
            elif name == b"content-encoding":
                self._encoding = value.strip().lower()
        if 100 <= status < 200 and status != 101:
            return  # an interim answer (100 Continue): the real one follows
        self.status = status
        if http10:
            self.keep_alive = b"keep-alive" in connection
        else:
            self.keep_alive = b"close" not in connection
        if status in (204, 304) or status == 101:
            self._state = _DONE
            self.keep_alive = self.keep_alive and status != 101
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            if length > MAX_BODY:
                raise HttpProtocolError("response body too large")
            self._left = length
            self._state = _LENGTH if length else _DONE
        else:
            self._state = _EOF
            self.keep_alive = False
