"""The PROXY protocol, v1 (text) and v2 (binary), as HAProxy specifies it: the header an L4 load
balancer writes before a connection's first byte, carrying the client's address.

`next_read` and `parse` are the decision logic, without I/O. `HeaderReader` is the asyncio
protocol that reads a header off a new connection: it asks the socket for no more bytes than the
header can still need, so nothing after it is consumed (a TLS ClientHello that follows stays in
the socket for the handshake), then hands the connection on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable
from typing import NamedTuple

from lb.exceptions import LBError

logger = logging.getLogger("lb.server")

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included
V2_MAX = 16 + 4096  # the v2 length field allows 64 KiB; real headers (a few TLVs) are far smaller
_FIRST_READ = 15  # the shortest header there is: "PROXY UNKNOWN\r\n"


class ProxyHeaderError(LBError):
    """Not a PROXY protocol header, or a malformed one."""


class ProxyHeader(NamedTuple):
    """The addresses a header carries; None for LOCAL, UNKNOWN or UNSPEC (a health check from
    the proxy itself): the connection's own addresses stand."""

    source: tuple[str, int] | None
    destination: tuple[str, int] | None


def next_read(header: bytes) -> int:
    """How many bytes to read next, never past the header's end: 0 once `header` is whole.
    Raises ProxyHeaderError as soon as the bytes cannot begin a header."""
    size = len(header)
    if header[:12] == V2_SIGNATURE[:size]:
        if size < 16:
            return 16 - size
        total = 16 + int.from_bytes(header[14:16], "big")
        if total > V2_MAX:
            raise ProxyHeaderError(f"PROXY v2 header of {total} bytes, over {V2_MAX}")
        return total - size
    if header[:6] != V1_PREFIX[:size]:
        raise ProxyHeaderError("no PROXY protocol header")
    if size < _FIRST_READ:
        return _FIRST_READ - size
    if header.endswith(b"\r\n"):
        return 0
    if size >= V1_MAX:
        raise ProxyHeaderError(f"PROXY v1 line longer than {V1_MAX} bytes")
    # The line ends at the first CRLF: after a CR, one byte may end it; else two at least.
    return 1 if header.endswith(b"\r") else min(2, V1_MAX - size)


def parse(header: bytes) -> ProxyHeader:
    """The addresses in a whole header (as `next_read` delimits it)."""
    if header.startswith(V2_SIGNATURE):
        return _parse_v2(header)
    return _parse_v1(header)


def _address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1: invalid address {text[:40]!r}") from None
    if address.version != version:
        raise ProxyHeaderError(f"PROXY v1: {text!r} is not an IPv{version} address")
    return str(address)


def _port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535 or text != str(int(text)):
        raise ProxyHeaderError(f"PROXY v1: invalid port {text[:8]!r}")
    return int(text)


def _parse_v1(header: bytes) -> ProxyHeader:
    try:
        line = header[:-2].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1: not ASCII") from None
    if "\r" in line or "\n" in line:
        raise ProxyHeaderError("PROXY v1: stray CR or LF")
    fields = line.split(" ")
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(None, None)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("PROXY v1: expected 'PROXY TCP4|TCP6 SRC DST SPORT DPORT'")
    version = 4 if fields[1] == "TCP4" else 6
    source = (_address(fields[2], version), _port(fields[4]))
    destination = (_address(fields[3], version), _port(fields[5]))
    return ProxyHeader(source, destination)


def _parse_v2(header: bytes) -> ProxyHeader:
    version, command = header[12] >> 4, header[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"PROXY v2: version {version}")
    if command == 0x0:  # LOCAL: the proxy speaking for itself
        return ProxyHeader(None, None)
    if command != 0x1:
        raise ProxyHeaderError(f"PROXY v2: unknown command {command}")
    family, transport = header[13] >> 4, header[13] & 0x0F
    body = header[16:]
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    if family == 0x0:  # UNSPEC
        return ProxyHeader(None, None)
    if transport != 0x1:
        raise ProxyHeaderError("PROXY v2: not a stream (TCP) connection")
    if family == 0x1 and len(body) >= 12:
        src, dst = ipaddress.IPv4Address(body[0:4]), ipaddress.IPv4Address(body[4:8])
        ports = body[8:12]
    elif family == 0x2 and len(body) >= 36:
        src, dst = ipaddress.IPv6Address(body[0:16]), ipaddress.IPv6Address(body[16:32])
        ports = body[32:36]
    elif family == 0x3:  # a unix socket at the proxy: no IP to report
        return ProxyHeader(None, None)
    else:
        raise ProxyHeaderError(f"PROXY v2: address block too short for family {family}")
    source = (str(src), int.from_bytes(ports[0:2], "big"))
    destination = (str(dst), int.from_bytes(ports[2:4], "big"))
    return ProxyHeader(source, destination)


class HeaderReader(asyncio.BufferedProtocol):
    """Reads the PROXY header of one connection, then calls `done(header)` with reading paused;
    on a bad header, a closed connection or `timeout` seconds without a whole header, calls
    `failed(reason)` and aborts the connection."""

    def __init__(
        self,
        transport: asyncio.Transport,
        done: Callable[[ProxyHeader], None],
        failed: Callable[[str], None],
        timeout: float,
    ) -> None:
        self.transport = transport
        self._done = done
        self._failed = failed
        self._header = bytearray()
        self._buffer = bytearray(V2_MAX)
        self._want = _FIRST_READ
        self._finished = False
        loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = loop.call_later(timeout, self._fail, "timed out")

    def __repr__(self) -> str:
        return f"<HeaderReader [{len(self._header)} bytes read, {self._want} wanted]>"

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)[: self._want]

    def buffer_updated(self, nbytes: int) -> None:
        if self._finished:
            return
        self._header += self._buffer[:nbytes]
        try:
            want = next_read(bytes(self._header))
            if want:
                self._want = want
                return
            header = parse(bytes(self._header))
        except ProxyHeaderError as exc:
            return self._fail(str(exc))
        self._stop()
        self.transport.pause_reading()
        self._done(header)

    def eof_received(self) -> bool:
        self._fail("closed before a whole PROXY header")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._finished:
            self._stop()

    def _stop(self) -> None:
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, reason: str) -> None:
        if self._finished:
            return
        self._stop()
        self.transport.abort()
        self._failed(reason)


def accept(
    transport: asyncio.Transport,
    trusted: Callable[[str], bool],
    timeout: float,
    tls: ssl.SSLContext | None,
    connected: Callable[[asyncio.Transport, tuple[str, int] | None], None],
    keep: Callable[[asyncio.Task[None]], None],
) -> None:
    """Open a connection that must start with a PROXY header: from a peer that `trusted`
    accepts, read it (then the TLS handshake, with `tls`), and call `connected(transport,
    client)` with the transport to serve HTTP on and the client address the header gave (None:
    the peer's own). Anything else is closed. `keep` holds the handshake task while it runs."""
    peer = transport.get_extra_info("peername")
    host = peer[0] if isinstance(peer, tuple) and peer else ""
    if not trusted(host):
        logger.warning("closed a connection from %s: not in trusted_proxies (PROXY protocol)", host)
        transport.abort()
        return
    protocol = transport.get_protocol()

    def failed(reason: str) -> None:
        logger.warning("closed a connection from %s: %s", host, reason)

    def done(header: ProxyHeader) -> None:
        transport.set_protocol(protocol)
        if tls is None:
            connected(transport, header.source)
            transport.resume_reading()
        else:
            keep(asyncio.get_running_loop().create_task(handshake(header.source)))

    async def handshake(client: tuple[str, int] | None) -> None:
        assert tls is not None
        loop = asyncio.get_running_loop()
        try:
            secured = await loop.start_tls(
                transport, protocol, tls, server_side=True, ssl_handshake_timeout=timeout
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            logger.debug("TLS handshake with %s failed: %s", client or host, exc)
            transport.abort()
            return
        if secured is None:  # closed meanwhile
            return
        connected(secured, client)

    transport.set_protocol(HeaderReader(transport, done, failed, timeout))
