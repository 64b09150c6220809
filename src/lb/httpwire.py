"""The HTTP/1.1 wire pieces lb's server protocol (`lb.server`, `lb.cycle`) writes with: status
lines, the header byte checks, flow control over a transport, and a connection's addresses.

They follow uvicorn's httptools protocol, whose behaviour lb's keeps, but are lb's own: lb runs on
any uvicorn of its supported range through uvicorn's public `http=` setting, and imports nothing
from `uvicorn.protocols` (tests/unit/test_no_private_uvicorn.py).
"""

from __future__ import annotations

import asyncio
import http
import socket

from lb.types import Receive, Scope, Send

HIGH_WATER_LIMIT = 64 * 1024  # request body bytes buffered before reading pauses


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINE = {status: _status_line(status) for status in range(100, 600)}

# RFC 9110 5.1/5.5: bytes a header name (a token) and a header value may not hold, as uvicorn
# checks them; a table of 256 entries, 1 for a refused byte, so that `translate` checks all the
# names (or values) of a response at once.
_NOT_IN_NAME = set(range(0x20)) | {0x7F} | set(b'()<>@,;:[]={} \t\\"')
_NOT_IN_VALUE = (set(range(0x20)) - {0x09}) | {0x7F}
BAD_NAME = bytes(i in _NOT_IN_NAME for i in range(256))
BAD_VALUE = bytes(i in _NOT_IN_VALUE for i in range(256))


class FlowControl:
    """Reading paused while a request body waits for the app, writing paused while the transport's
    buffer is full (`drain` waits for it)."""

    __slots__ = ("_transport", "read_paused", "write_paused", "_writable")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._writable = asyncio.Event()
        self._writable.set()

    async def drain(self) -> None:
        await self._writable.wait()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            self._writable.clear()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            self._writable.set()


async def service_unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    """The app a request gets over uvicorn's `limit_concurrency`."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"19"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"Service Unavailable", "more_body": False})


def remote_address(transport: asyncio.BaseTransport) -> tuple[str, int] | None:
    """The peer's (host, port); None for a Unix socket."""
    sock: socket.socket | None = transport.get_extra_info("socket")
    info: object
    if sock is not None:
        try:
            info = sock.getpeername()
        except OSError:  # uvloop on a Unix socket, at times
            return None
    else:
        info = transport.get_extra_info("peername")
    if isinstance(info, list | tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


def local_address(transport: asyncio.BaseTransport) -> tuple[str, int | None] | None:
    """The listening side's (host, port), or (path, None) on a Unix socket."""
    sock: socket.socket | None = transport.get_extra_info("socket")
    info = sock.getsockname() if sock is not None else transport.get_extra_info("sockname")
    if isinstance(info, str):
        return (info, None)
    if isinstance(info, list | tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


def is_tls(transport: asyncio.BaseTransport) -> bool:
    return bool(transport.get_extra_info("sslcontext"))
