"""Property tests of the branch-response reader: any bytes, split anywhere.

Whatever a branch sends, `ResponseReader` raises nothing but `HttpProtocolError` (of which
`ResponseTooLarge` is one), gives the same result however the bytes are split, and never
holds a body over its cap.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from dtmx.net.branch_wire import HttpProtocolError, ResponseReader, ResponseTooLarge

CAP = 256
HEAD_CAP = 512


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


def _outcome(data: bytes, cuts: list[int], eof: bool = True) -> tuple[object, ...]:
    """What the reader makes of `data` fed in pieces: a result or the error's message."""
    r = ResponseReader(max_body=CAP, max_head=HEAD_CAP)
    try:
        done = False
        for piece in _split(data, cuts):
            if done and not piece:
                continue
            done = r.feed(piece)
            assert len(r.body) <= CAP
        if not done and eof:
            done = r.feed_eof()
    except HttpProtocolError as e:
        return ("error", type(e).__name__)
    assert len(r.body) <= CAP
    return ("done", r.status, r.body, r.keep_alive) if done else ("incomplete",)


def _response(status: int, body: bytes, encoding: str, framing: str,
              extra: list[tuple[bytes, bytes]]) -> bytes:
    if encoding == "gzip":
        wire = gzip.compress(body)
    elif encoding == "deflate":
        wire = zlib.compress(body)
    else:
        wire = body
    head = [b"HTTP/1.1 %d X" % status]
    head += [name + b": " + value for name, value in extra]
    if encoding != "identity":
        head.append(b"Content-Encoding: " + encoding.encode())
    if framing == "length":
        head.append(b"Content-Length: %d" % len(wire))
        payload = wire
    elif framing == "chunked":
        head.append(b"Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(wire[i:i + 7]), wire[i:i + 7])
                           for i in range(0, len(wire), 7)) + b"0\r\n\r\n"
    else:  # read until the connection closes
        head.append(b"Connection: close")
        payload = wire
    return b"\r\n".join(head) + b"\r\n\r\n" + payload


_token = st.binary(min_size=1, max_size=12).filter(
    lambda b: all(c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
                  for c in b))
# printable ASCII and tabs (llhttp refuses other control bytes in a header value)
_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"),
                 max_size=40).map(lambda t: t.encode().strip())
_extra = st.lists(st.tuples(_token, _value), max_size=4).filter(
    lambda hs: not any(n.lower() in (b"content-length", b"transfer-encoding",
                                     b"content-encoding", b"connection") for n, _ in hs))
_cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), _cuts, _cuts)
def test_any_bytes_raise_only_protocol_errors_and_splits_do_not_matter(
    data: bytes, cuts: list[int], other_cuts: list[int]
) -> None:
    assert _outcome(data, cuts) == _outcome(data, other_cuts)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([200, 204, 409, 425, 500]), st.binary(max_size=2 * CAP),
       st.sampled_from(["identity", "gzip", "deflate"]),
       st.sampled_from(["length", "chunked", "close"]), _extra, _cuts)
def test_valid_responses_read_the_same_however_split(
    status: int, body: bytes, encoding: str, framing: str,
    extra: list[tuple[bytes, bytes]], cuts: list[int],
) -> None:
    if status == 204:  # a 204 has no body (bytes after its head are an error)
        raw = b"HTTP/1.1 204 No Content\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in extra)
        assert _outcome(raw + b"\r\n", cuts) == ("done", 204, b"", True)
        return
    raw = _response(status, body, encoding, framing, extra)
    got = _outcome(raw, cuts)
    if len(body) > CAP:
        assert got == ("error", ResponseTooLarge.__name__)
    elif encoding == "identity" or len(raw) - raw.index(b"\r\n\r\n") - 4 <= CAP:
        assert got == ("done", status, body, framing != "close")
    # a compressed body whose wire form passes the cap is refused: either is an error


@settings(max_examples=100, deadline=None)
@given(_cuts)
def test_a_head_that_never_ends_holds_a_bounded_amount(cuts: list[int]) -> None:
    """1 MiB of header bytes in pieces: refused once past the head cap, having held no
    more than the cap plus one piece."""
    data = b"HTTP/1.1 200 OK\r\nX: " + b"a" * (1 << 20)
    pieces = _split(data, [c * 97 for c in cuts]) if cuts else [data]
    r = ResponseReader(max_body=CAP, max_head=HEAD_CAP)
    fed = 0
    try:
        for piece in pieces:
            fed += len(piece)
            r.feed(piece)
    except HttpProtocolError as e:
        assert "head larger than" in str(e)
    else:
        raise AssertionError("a never-ending head was accepted")
    biggest = max(len(p) for p in pieces)
    assert fed <= HEAD_CAP + biggest + 64


def test_a_compression_bomb_costs_the_cap_not_its_size() -> None:
    """64 MiB of zeros in 64 KiB of gzip: memory at peak stays near the 1 MiB cap."""
    bomb = gzip.compress(b"\0" * (64 << 20))
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(
        bomb) + bomb
    tracemalloc.start()
    try:
        r = ResponseReader(max_body=1 << 20)
        try:
            for i in range(0, len(raw), 16384):
                r.feed(raw[i:i + 16384])
        except ResponseTooLarge:
            pass
        else:
            raise AssertionError("the bomb was accepted")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
