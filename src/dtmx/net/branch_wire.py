"""HTTP/1.1 bytes for branch calls: URL targets, request building, the response reader.

Pure: no sockets, no event loop. `branch_pool.py` carries these bytes over pooled
connections. Only what a branch call needs is supported; anything else (https, user info
in the URL) is reported as "not ours" so the caller hands the URL to aiohttp instead.

Responses are parsed by httptools (llhttp, the parser Node.js uses); this module adds the
limits a transaction manager needs against a careless or hostile branch: a bounded head,
and a bounded body counted both as read and after gzip/deflate decoding, so a small
compressed answer cannot inflate into gigabytes.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, urlsplit

import httptools

#: a response head larger than this is not an HTTP server we want to talk to
MAX_HEAD = 64 * 1024
#: default cap on a branch answer, in bytes read and in bytes after decompression
DEFAULT_MAX_RESPONSE = 1024 * 1024

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


class ResponseTooLarge(HttpProtocolError):
    """The branch answered more bytes than the cap (as read, or after decompression)."""


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
        """(host, port): connections are pooled per key."""
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
    if (v.isascii() and v.isalnum()) or _QUERY_SAFE.fullmatch(v):
        return v
    return quote_plus(v, safe="")


def encode_query(params: Mapping[str, str]) -> bytes:
    """Query parameters in the given order, each value encoded as Go's url.QueryEscape."""
    out = ""
    for k, v in params.items():  # once per branch call: no generator, no f-string of enums
        out += ("&" if out else "") + k + "=" + query_value(v)
    return out.encode("ascii")


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




_GZIP = (b"gzip", b"x-gzip")


def _zlib_wrapped(start: bytes) -> bool:
    """Whether a deflate body starts with the zlib header (RFC 1950) or is raw deflate,
    as some servers send it."""
    return len(start) >= 2 and start[0] & 0x0F == 8 and (start[0] << 8 | start[1]) % 31 == 0


class BodyDecoder:
    """One response body, decoded as it arrives (gzip, deflate; other encodings are kept
    as sent), holding at most `max_body` bytes: `add` raises `ResponseTooLarge` as soon
    as the bytes read or the bytes they decode to pass it, `HttpProtocolError` for a
    corrupt stream. Used by both branch client paths, so the cap means the same on each.
    """

    __slots__ = ("_decoder", "_encoding", "_max", "_parts", "_raw", "_size", "_start")

    def __init__(self, encoding: bytes, max_body: int) -> None:
        self._encoding = encoding.strip().lower()
        self._max = max_body
        self._parts: list[bytes] = []
        self._raw = 0
        self._size = 0
        self._start = b""  # the first bytes of a deflate body, until its kind is known
        self._decoder: zlib._Decompress | None = None
        if self._encoding in _GZIP:
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def add(self, data: bytes) -> None:
        """Take the next bytes of the body, as read from the wire."""
        self._raw += len(data)
        if self._raw > self._max:
            raise self._too_large()
        if self._encoding == b"deflate" and self._decoder is None:
            self._start += data
            if len(self._start) < 2:
                return
            data, self._start = self._start, b""
            wbits = zlib.MAX_WBITS if _zlib_wrapped(data) else -zlib.MAX_WBITS
            self._decoder = zlib.decompressobj(wbits)
        if self._decoder is not None:
            try:
                # one byte over the room is enough to know the cap is passed
                data = self._decoder.decompress(data, self._max - self._size + 1)
            except zlib.error as e:
                raise self._bad(e) from None
        self._size += len(data)
        if self._size > self._max:
            raise self._too_large()
        if data:
            self._parts.append(data)

    def finish(self) -> bytes:
        """The whole decoded body; raises `HttpProtocolError` if the stream is cut short."""
        if self._start or (self._decoder is not None and not self._decoder.eof):
            raise self._bad("incomplete stream")
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _too_large(self) -> ResponseTooLarge:
        return ResponseTooLarge(f"branch response larger than {self._max} bytes")

    def _bad(self, e: object) -> HttpProtocolError:
        return HttpProtocolError(f"bad {self._encoding.decode('latin-1')} body: {e}")


class ResponseReader:
    """One HTTP/1.x response, parsed by httptools as its bytes arrive.

    `feed` returns True once the response is complete; `status`, `body` and `keep_alive`
    are then set. 1xx interim answers are skipped. Raises `HttpProtocolError` for anything
    that is not a valid response, `ResponseTooLarge` once the body passes `max_body` bytes
    as read or as decoded (`BodyDecoder`). Memory held: at most `max_head` plus one fed
    piece while the head arrives, then at most `max_body`.
    """

    __slots__ = (
        "_decoder", "_done", "_encoding", "_error", "_framed", "_head_bytes", "_in_head",
        "_max_body", "_max_head", "_parser", "body", "keep_alive", "status",
    )

    def __init__(self, max_body: int = DEFAULT_MAX_RESPONSE, max_head: int = MAX_HEAD) -> None:
        self._max_body = max_body
        self._max_head = max_head
        self._parser = httptools.HttpResponseParser(self)
        self._head_bytes = 0
        self._in_head = True
        self._done = False
        self._error: HttpProtocolError | None = None
        self._encoding = b""
        self._framed = False  # Content-Length or Transfer-Encoding given
        self._decoder: BodyDecoder | None = None
        self.status = 0
        self.keep_alive = False
        self.body = b""

    @property
    def done(self) -> bool:
        """Whether the whole response has been read."""
        return self._done

    def feed(self, data: bytes) -> bool:
        """Take more bytes; True once the response is complete."""
        if self._done:
            if data:
                raise HttpProtocolError("data after the end of the response")
            return True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise HttpProtocolError("the branch switched protocols") from None
        except httptools.HttpParserError as e:
            if self._error is not None:
                raise self._error from None
            if self._done:
                raise HttpProtocolError("data after the end of the response") from None
            raise HttpProtocolError(f"malformed response: {e}") from None
        if self._in_head and not self._done:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                raise HttpProtocolError(f"response head larger than {self._max_head} bytes")
        return self._done

    def feed_eof(self) -> bool:
        """The server closed; True if that completes the response (a body without a
        length ends with the connection)."""
        if self._done:
            return True
        if self._in_head or self._framed or self.status < 200 or self.status in (204, 304):
            return False
        self._finish(keep_alive=False)
        return True

    # ---- httptools callbacks (an exception raised here comes back from feed_data as a
    # generic parser error, so it is kept in _error and raised again by feed)

    def on_message_begin(self) -> None:
        """Parser callback: a response starts (a second one on the connection is an error)."""
        if self._done:
            self._keep(HttpProtocolError("data after the end of the response"))
        self._in_head = True
        self._head_bytes = 0
        self._encoding = b""
        self._framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        """Parser callback: one header; only encoding and framing headers are kept."""
        name = name.lower()
        if name == b"content-encoding":
            self._encoding = value
        elif name in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        """Parser callback: the status is known; the body decoder starts, bounded by the answer
        cap.
        """
        self._in_head = False
        self.status = self._parser.get_status_code()
        self._decoder = BodyDecoder(self._encoding, self._max_body)

    def on_body(self, body: bytes) -> None:
        """Parser callback: a piece of the body, decoded (gzip/deflate) within the cap."""
        assert self._decoder is not None  # headers come first
        try:
            self._decoder.add(body)
        except HttpProtocolError as e:
            self._keep(e)

    def on_message_complete(self) -> None:
        """Parser callback: the response is complete (interim 1xx answers are skipped)."""
        if 100 <= self.status < 200:
            return  # an interim answer (100 Continue): the real one follows
        try:
            self._finish(keep_alive=self._parser.should_keep_alive())
        except HttpProtocolError as e:
            self._keep(e)

    def _finish(self, *, keep_alive: bool) -> None:
        assert self._decoder is not None
        self.body = self._decoder.finish()
        self.keep_alive = keep_alive
        self._done = True

    def _keep(self, error: HttpProtocolError) -> None:
        self._error = error
        raise error
