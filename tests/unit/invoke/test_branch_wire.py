"""Request bytes and response parsing of the branch HTTP/1.1 client (no sockets)."""

from __future__ import annotations

import gzip
import zlib

import pytest

from dtmx.net.branch_wire import (
    MAX_HEAD,
    HeaderError,
    HttpProtocolError,
    ResponseReader,
    ResponseTooLarge,
    build_head,
    encode_query,
    header_lines,
    parse_target,
    query_value,
)


def test_target_of_plain_url() -> None:
    t = parse_target("http://127.0.0.1:8081/api/busi/TransOut")
    assert t is not None
    assert t.key == ("127.0.0.1", 8081)
    assert t.path_q == b"/api/busi/TransOut?"
    assert t.head.startswith(b"Host: 127.0.0.1:8081\r\n")


def test_target_default_port_and_empty_path() -> None:
    t = parse_target("http://example.test")
    assert t is not None
    assert t.key == ("example.test", 80)
    assert t.path_q == b"/?"
    assert t.head.startswith(b"Host: example.test\r\n")


def test_target_keeps_existing_query_and_drops_fragment() -> None:
    t = parse_target("http://h:1/p?a=1&b=x%20y#frag")
    assert t is not None
    assert t.path_q == b"/p?a=1&b=x%20y&"


def test_target_empty_query_mark() -> None:
    t = parse_target("http://h:1/p?")
    assert t is not None and t.path_q == b"/p?"


def test_target_encodes_what_cannot_be_raw() -> None:
    t = parse_target("http://h:1/a b/ü/100%/%41?q=a b")
    assert t is not None
    assert t.path_q == b"/a%20b/%C3%BC/100%25/%41?q=a%20b&"


def test_target_ipv6() -> None:
    t = parse_target("http://[::1]:9000/x")
    assert t is not None
    assert t.key == ("::1", 9000)
    assert t.head.startswith(b"Host: [::1]:9000\r\n")


@pytest.mark.parametrize(
    "url",
    ["https://h/x", "http://user:pw@h/x", "http://h:99999/x", "http:///x", "grpc://h/x", ""],
)
def test_not_ours(url: str) -> None:
    assert parse_target(url) is None


def test_query_values_encoded_like_go() -> None:
    assert query_value("abc-_.~09") == "abc-_.~09"
    assert query_value("a b&c=d/é+") == "a+b%26c%3Dd%2F%C3%A9%2B"
    q = encode_query({"gid": "g 1&", "trans_type": "saga", "branch_id": "01", "op": "action"})
    assert q == b"gid=g+1%26&trans_type=saga&branch_id=01&op=action"


def test_header_lines_default_content_type() -> None:
    assert header_lines({}) == b"Content-Type: application/json\r\n"
    lines = header_lines({"X-Token": "abc", "X-Other": " v "})
    assert lines == b"Content-Type: application/json\r\nX-Token: abc\r\nX-Other: v\r\n"


def test_branch_header_overrides_content_type_any_case() -> None:
    lines = header_lines({"content-type": "text/plain"})
    assert lines == b"content-type: text/plain\r\n"


def test_framing_headers_are_ignored() -> None:
    lines = header_lines({"Host": "evil", "Content-Length": "5", "Connection": "close",
                          "Transfer-Encoding": "chunked", "X-A": "1"})
    assert lines == b"Content-Type: application/json\r\nX-A: 1\r\n"


@pytest.mark.parametrize(
    "headers",
    [{"X-A": "v\r\nX-Injected: 1"}, {"X-A": "v\nb"}, {"X-A": "v\x00"}, {"Bad Name": "v"},
     {"X-A\r\n": "v"}, {"": "v"}],
)
def test_bad_headers_refused(headers: dict[str, str]) -> None:
    with pytest.raises(HeaderError):
        header_lines(headers)


def test_build_head_post_and_get() -> None:
    t = parse_target("http://h:1/p?a=1")
    assert t is not None
    q = encode_query({"gid": "g", "trans_type": "saga", "branch_id": "01", "op": "action"})
    post = build_head(b"POST", t, q, header_lines({}), 7)
    assert post == (
        b"POST /p?a=1&gid=g&trans_type=saga&branch_id=01&op=action HTTP/1.1\r\n"
        b"Host: h:1\r\nUser-Agent: dtmx\r\nContent-Type: application/json\r\n"
        b"Content-Length: 7\r\n\r\n"
    )
    get = build_head(b"GET", t, q, header_lines({}), None)
    assert get.startswith(b"GET /p?a=1&gid=g&")
    assert b"Content-Length" not in get and get.endswith(b"json\r\n\r\n")
    empty_post = build_head(b"POST", t, q, header_lines({}), 0)
    assert empty_post.endswith(b"Content-Length: 0\r\n\r\n")


def _parse(*pieces: bytes) -> ResponseReader:
    p = ResponseReader()
    done = False
    for piece in pieces:
        assert not done, "complete before the last piece"
        done = p.feed(piece)
    assert done
    return p


def _bytewise(raw: bytes) -> ResponseReader:
    return _parse(*(raw[i : i + 1] for i in range(len(raw))))


def test_content_length_response() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello"
    for p in (_parse(raw), _bytewise(raw), _parse(raw[:20], raw[20:42], raw[42:])):
        assert (p.status, p.body, p.keep_alive) == (200, b"hello", True)


def test_chunked_response_with_extensions_and_trailer() -> None:
    raw = (b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4;ext=1\r\nFAIL\r\n3\r\nURE\r\n0\r\nTrailer: x\r\n\r\n")
    for p in (_parse(raw), _bytewise(raw)):
        assert (p.status, p.body, p.keep_alive) == (409, b"FAILURE", True)


def test_chunked_without_trailer() -> None:
    p = _bytewise(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"a\r\n0123456789\r\n0\r\n\r\n")
    assert p.body == b"0123456789"


def test_connection_close_and_http10() -> None:
    p = _parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert p.keep_alive is False and p.body == b""
    p = _parse(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert p.keep_alive is False
    p = _parse(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok")
    assert p.keep_alive is True


def test_body_until_close() -> None:
    p = ResponseReader()
    assert not p.feed(b"HTTP/1.1 200 OK\r\n\r\npart1")
    assert not p.feed(b"part2")
    assert p.feed_eof()
    assert (p.body, p.keep_alive) == (b"part1part2", False)


def test_eof_mid_body_is_not_complete() -> None:
    p = ResponseReader()
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert not p.feed_eof()


def test_interim_100_is_skipped() -> None:
    p = _parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert (p.status, p.body) == (200, b"ok")


def test_no_body_statuses() -> None:
    assert _parse(b"HTTP/1.1 204 No Content\r\n\r\n").body == b""
    assert _parse(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").body == b""


def test_compressed_bodies() -> None:
    raw = gzip.compress(b"ONGOING")
    p = _parse(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
               % len(raw) + raw)
    assert p.body == b"ONGOING"
    raw = zlib.compress(b"FAILURE")
    p = _parse(b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n"
               % len(raw) + raw)
    assert p.body == b"FAILURE"
    with pytest.raises(HttpProtocolError, match="bad gzip body"):
        ResponseReader().feed(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nxyz")
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = c.compress(b"ONGOING") + c.flush()  # raw deflate, without the zlib wrapper
    p = _bytewise(b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n"
                  b"\r\n" % len(raw) + raw)
    assert p.body == b"ONGOING"


def test_truncated_gzip_is_an_error() -> None:
    raw = gzip.compress(b"ONGOING" * 100)[:-12]
    with pytest.raises(HttpProtocolError, match="incomplete stream"):
        ResponseReader().feed(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                              b"Content-Length: %d\r\n\r\n" % len(raw) + raw)


@pytest.mark.parametrize("encoding", [b"gzip", b"deflate"])
def test_compression_bomb_stops_at_the_cap(encoding: bytes) -> None:
    # 64 MiB of zeros compress to about 64 KiB: the cap (1 KiB here) counts decoded bytes
    big = b"\0" * (64 * 1024 * 1024)
    raw = gzip.compress(big) if encoding == b"gzip" else zlib.compress(big)
    p = ResponseReader(max_body=1024)
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (
        encoding, len(raw))
    with pytest.raises(ResponseTooLarge, match="larger than 1024 bytes"):
        for i in range(0, len(head + raw), 4096):
            p.feed((head + raw)[i : i + 4096])


def test_plain_body_over_the_cap() -> None:
    p = ResponseReader(max_body=10)
    assert p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
    with pytest.raises(ResponseTooLarge):
        ResponseReader(max_body=10).feed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789x")
    with pytest.raises(ResponseTooLarge):  # a body read until close counts the same
        ResponseReader(max_body=10).feed(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 11)


def test_switching_protocols_is_an_error() -> None:
    with pytest.raises(HttpProtocolError, match="switched protocols"):
        ResponseReader().feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                              b"Connection: Upgrade\r\n\r\n")


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
    ],
)
def test_protocol_errors(raw: bytes) -> None:
    with pytest.raises(HttpProtocolError):
        ResponseReader().feed(raw)


def test_head_too_large() -> None:
    p = ResponseReader()
    with pytest.raises(HttpProtocolError):
        p.feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD)
