"""The PROXY protocol header parser (lb.proxyproto), without sockets: v1 and v2 per HAProxy's
spec, and reads that never go past the header's end."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from lb.proxyproto import V2_SIGNATURE, ProxyHeader, ProxyHeaderError, next_read, parse


def v2(
    command: int = 1,
    family: int = 1,
    transport: int = 1,
    src: str = "203.0.113.7",
    dst: str = "10.0.0.1",
    ports: tuple[int, int] = (51234, 443),
    tlvs: bytes = b"",
    version: int = 2,
) -> bytes:
    """A v2 header as a cloud L4 load balancer writes it."""
    if family == 1:
        body = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
    elif family == 2:
        body = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    else:
        body = b""
    if body:
        body += struct.pack("!HH", *ports)
    body += tlvs
    head = bytes([(version << 4) | command, (family << 4) | transport])
    return V2_SIGNATURE + head + struct.pack("!H", len(body)) + body


def read_whole(data: bytes) -> tuple[bytes, bytes]:
    """Feed `data` as next_read asks; returns (header, what was left unread)."""
    header = b""
    while True:
        want = next_read(header) if header else 15
        if not want:
            return header, data[len(header) :]
        chunk = data[len(header) : len(header) + want]
        if not chunk:
            raise AssertionError("ran out of data")
        header += chunk


REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\n", (("192.0.2.1", 56324), ("10.0.0.1", 443))),
        (b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n", (("2001:db8::1", 1), ("::1", 65535))),
        (b"PROXY UNKNOWN\r\n", (None, None)),
        (b"PROXY UNKNOWN ff:: ff:: 1 2\r\n", (None, None)),
    ],
)
def test_v1(line: bytes, expected: tuple[object, object]) -> None:
    header, rest = read_whole(line + REQUEST)
    assert header == line
    assert rest == REQUEST  # not a byte of the request was read with the header
    assert parse(header) == ProxyHeader(*expected)


def test_v2_ipv4_ipv6_tlvs_and_local() -> None:
    tlv = b"\x04\x00\x05hello"  # PP2_TYPE_NOOP, as padding goes
    for raw, expected in [
        (v2(tlvs=tlv), (("203.0.113.7", 51234), ("10.0.0.1", 443))),
        (
            v2(family=2, src="2001:db8::7", dst="2001:db8::1"),
            (("2001:db8::7", 51234), ("2001:db8::1", 443)),
        ),
        (v2(command=0, family=0, transport=0), (None, None)),  # LOCAL: the proxy's health check
        (v2(family=0, transport=0), (None, None)),  # UNSPEC
    ]:
        header, rest = read_whole(raw + REQUEST)
        assert header == raw and rest == REQUEST
        assert parse(header) == ProxyHeader(*expected)


@pytest.mark.parametrize(
    "data",
    [
        REQUEST,  # no header at all
        b"PROXY TCP4 192.0.2.1 10.0.0.1 56324\r\n",  # a port missing
        b"PROXY TCP4 ::1 10.0.0.1 1 2\r\n",  # IPv6 in TCP4
        b"PROXY TCP4 192.0.2.1 10.0.0.1 99999 443\r\n",
        b"PROXY TCP4 192.0.2.1 10.0.0.1 +1 443\r\n",
        b"PROXY TCP5 192.0.2.1 10.0.0.1 1 443\r\n",
        b"PROXY TCP4 192.0.2.1 10.0.0.1 1 443\rX\r\n",
        b"PROXY " + b"A" * 200 + b"\r\n",  # over 107 bytes
        b"PROXY TCP4 \xff\xfe 10.0.0.1 1 443\r\n",
        v2(version=1),
        v2(command=2),
        v2(transport=2),  # DGRAM
        v2()[:20],  # cut short: the connection ends before the announced length
        V2_SIGNATURE + b"\x21\x11\xff\xff",  # 64 KiB announced
        V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4,  # too short for INET
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises((ProxyHeaderError, AssertionError)):
        header, _ = read_whole(data)
        parse(header)
