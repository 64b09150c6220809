"""Header rules as pure functions (SPEC section 3)."""

from __future__ import annotations

import ipaddress

import pytest

from lb.proxy.headers import (
    client_ip,
    downstream_response_headers,
    upstream_request_headers,
    valid_request_id,
)

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.0/8"))


def upstream(headers: list[tuple[bytes, bytes]], **kw: object) -> dict[bytes, list[bytes]]:
    args: dict[str, object] = {
        "peer": "192.0.2.1",
        "scheme": "http",
        "request_id": b"rid",
        "host": None,
        "fallback_host": b"backend:80",
        "peer_trusted": False,
    }
    args.update(kw)
    out: dict[bytes, list[bytes]] = {}
    for name, value in upstream_request_headers(headers, **args):  # type: ignore[arg-type]
        out.setdefault(name, []).append(value)
    return out


def test_hop_by_hop_and_connection_listed_headers_are_dropped() -> None:
    out = upstream(
        [
            (b"host", b"h"),
            (b"connection", b"close, x-a"),
            (b"x-a", b"1"),
            (b"te", b"trailers"),
            (b"keep-alive", b"1"),
            (b"upgrade", b"x"),
            (b"proxy-connection", b"x"),
            (b"x-b", b"2"),
        ]
    )
    assert set(out) == {
        b"host",
        b"x-b",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
    }


def test_chunked_request_framing_is_redeclared() -> None:
    assert upstream([(b"transfer-encoding", b"chunked")])[b"transfer-encoding"] == [b"chunked"]
    assert b"transfer-encoding" not in upstream([(b"content-length", b"3")])


def test_forwarded_headers() -> None:
    out = upstream(
        [
            (b"host", b"shop"),
            (b"x-forwarded-for", b"1.1.1.1"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"evil"),
        ]
    )
    assert out[b"x-forwarded-for"] == [b"1.1.1.1, 192.0.2.1"]
    # Not from a trusted peer: their proto/host claims are replaced.
    assert out[b"x-forwarded-proto"] == [b"http"]
    assert out[b"x-forwarded-host"] == [b"shop"]
    trusted = upstream([(b"host", b"shop"), (b"x-forwarded-proto", b"https")], peer_trusted=True)
    assert trusted[b"x-forwarded-proto"] == [b"https"]


def test_host_replaced_or_filled_in() -> None:
    assert upstream([(b"host", b"shop")], host=b"10.0.0.1:81")[b"host"] == [b"10.0.0.1:81"]
    assert upstream([])[b"host"] == [b"backend:80"]


def test_response_headers_keep_duplicates_and_set_request_id() -> None:
    out = downstream_response_headers(
        [
            (b"Set-Cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
            (b"Connection", b"x-y"),
            (b"X-Y", b"1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Request-ID", b"theirs"),
        ],
        b"ours",
    )
    assert out == [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"x-request-id", b"ours")]


@pytest.mark.parametrize(
    "connection", [b"keep-alive", b"Keep-Alive", b"close", b"keep-alive, x-y", b"Close,X-Y"]
)
def test_response_connection_header_drops_what_it_names(connection: bytes) -> None:
    headers = [(b"Connection", connection), (b"Keep-Alive", b"timeout=5"), (b"X-Y", b"1")]
    out = downstream_response_headers(headers, b"ours")
    kept = [] if b"x-y" in connection.lower() else [(b"x-y", b"1")]
    assert out == [*kept, (b"x-request-id", b"ours")]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"abc", True),
        (b"a.b_c:d-9", True),
        (b"x" * 128, True),
        (b"x" * 129, False),
        (b"", False),
        (b"a b", False),
        (b"a\r\nb", False),
        (b"\xff", False),
    ],
)
def test_request_id_pattern(value: bytes, ok: bool) -> None:
    assert valid_request_id(value) is ok


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("192.0.2.1", b"1.2.3.4", "192.0.2.1"),  # untrusted peer: header ignored
        ("10.0.0.1", b"1.2.3.4", "1.2.3.4"),
        ("10.0.0.1", b"1.2.3.4, 5.6.7.8", "5.6.7.8"),  # rightmost untrusted
        ("10.0.0.1", b"1.2.3.4, 10.9.9.9", "1.2.3.4"),
        ("10.0.0.1", b"10.1.1.1, 10.2.2.2", "10.0.0.1"),  # all trusted: the peer
        ("10.0.0.1", b"garbage", "10.0.0.1"),
        ("10.0.0.1", None, "10.0.0.1"),
    ],
)
def test_client_ip(peer: str, xff: bytes | None, expected: str) -> None:
    assert client_ip(peer, xff, TRUSTED) == expected
