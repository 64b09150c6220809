"""lb.transport.framing: the request head and body framing, without sockets."""

from __future__ import annotations

import httpx
import pytest

from lb.transport import request_sent
from lb.transport.framing import (
    Framing,
    body_framing,
    encode_chunk,
    encode_head,
    ends_at_close,
    faulty_framing,
    keepalive_limit,
    persistent,
)


def test_head_is_written_exactly_as_given() -> None:
    headers = [(b"Host", b"h:1"), (b"X-B", b"1"), (b"x-a", b"2"), (b"X-B", b"3")]
    head = encode_head(b"GET", b"/a%2Fb/../c?x=%20&y", headers)
    assert head == (
        b"GET /a%2Fb/../c?x=%20&y HTTP/1.1\r\nHost: h:1\r\nX-B: 1\r\nx-a: 2\r\nX-B: 3\r\n\r\n"
    )


def test_chunked_header_is_appended_last() -> None:
    head = encode_head(b"POST", b"/", [(b"Host", b"h")], add_chunked=True)
    assert head == b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        (b"GET", b"/", [(b"X", b"a\r\nInjected: 1")]),
        (b"GET", b"/", [(b"X", b"a\nInjected: 1")]),
        (b"GET", b"/", [(b"X", b"a\rb")]),
        (b"GET", b"/", [(b"X\r\nY", b"1")]),
        (b"GET", b"/x HTTP/1.1\r\nHost: evil\r\n\r\nGET /y", []),
        (b"GET", b"/a b", []),
        (b"GET", b"", []),
    ],
)
def test_head_that_would_split_lines_is_refused(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(httpx.LocalProtocolError) as info:
        encode_head(method, target, headers)
    assert request_sent(info.value) is False


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], Framing(None, False)),
        ([(b"Content-Length", b"12")], Framing(12, False)),
        ([(b"content-length", b" 0 ")], Framing(0, False)),
        ([(b"Content-Length", b"5"), (b"CONTENT-LENGTH", b"5")], Framing(5, False)),
        ([(b"Transfer-Encoding", b"chunked")], Framing(None, True)),
        ([(b"Transfer-Encoding", b"gzip, Chunked")], Framing(None, True)),
        (
            [(b"transfer-encoding", b"gzip"), (b"transfer-encoding", b"chunked")],
            Framing(None, True),
        ),
        ([(b"X-Content-Length", b"1"), (b"Content-Lengthy", b"2")], Framing(None, False)),
    ],
)
def test_framing_read_from_headers(headers: list[tuple[bytes, bytes]], expected: Framing) -> None:
    assert body_framing(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Content-Length", b"5"), (b"Content-Length", b"6")],
        [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")],
        [(b"Transfer-Encoding", b"chunked, gzip")],
        [(b"Content-Length", b"-1")],
        [(b"Content-Length", b"1e3")],
        [(b"Content-Length", b"5, 5")],
    ],
)
def test_ambiguous_framing_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(httpx.LocalProtocolError) as info:
        body_framing(headers)
    assert request_sent(info.value) is False


def test_chunk_encoding() -> None:
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 300) == b"12c\r\n" + b"x" * 300 + b"\r\n"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], True),
        ([(b"Content-Type", b"text/plain")], True),
        ([(b"Transfer-Encoding", b"gzip")], True),
        ([(b"Content-Length", b"3")], False),
        ([(b"transfer-encoding", b"gzip, Chunked ")], False),
    ],
)
def test_body_ends_at_close_without_length_or_chunked(
    headers: list[tuple[bytes, bytes]], expected: bool
) -> None:
    assert ends_at_close(headers) is expected


@pytest.mark.parametrize(
    ("version", "headers", "expected"),
    [
        ("1.1", [], True),
        ("1.1", [(b"Connection", b"close")], False),
        ("1.1", [(b"connection", b"Upgrade, CLOSE")], False),
        ("1.0", [], False),
        ("1.0", [(b"Connection", b"Keep-Alive")], True),
    ],
)
def test_persistence_from_version_and_connection_header(
    version: str, headers: list[tuple[bytes, bytes]], expected: bool
) -> None:
    assert persistent(version, headers) is expected


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        (b"timeout=5, max=100", 4.0),  # Apache, Node: one second of margin
        (b"max=100,TIMEOUT = 60", 59.0),
        (b"timeout=1", 0.5),  # never less than half of what the backend gives
        (b'timeout="2"', 1.0),
        (b"timeout=0", 0.0),  # not to be reused
        (b"max=5", None),
        (b"timeout=soon", None),
        (b"timeout=-3", None),
        (b"", None),
    ],
)
def test_keepalive_limit_from_the_backends_header(value: bytes, limit: float | None) -> None:
    assert keepalive_limit(value) == limit


@pytest.mark.parametrize(
    ("version", "headers", "fault"),
    [
        ("1.1", [(b"Transfer-Encoding", b"chunked")], None),
        ("1.1", [(b"Transfer-Encoding", b"gzip, chunked")], None),
        ("1.1", [(b"Transfer-Encoding", b"gzip")], None),  # delimited by the close: legal
        ("1.0", [(b"Transfer-Encoding", b"chunked")], "HTTP/1.0"),
        ("1.1", [(b"Transfer-Encoding", b"chunked"), (b"transfer-encoding", b"chunked")], "once"),
        ("1.1", [(b"Transfer-Encoding", b"chunked, gzip")], "not last"),
    ],
)
def test_faulty_response_framing(
    version: str, headers: list[tuple[bytes, bytes]], fault: str | None
) -> None:
    found = faulty_framing(version, headers)
    assert found == fault if fault is None else fault in (found or "")
