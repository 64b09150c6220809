"""The response side of an upstream connection: the llhttp (httptools) callbacks that turn a
backend's bytes into the exchange's `ResponseStream`, and the checks a head must pass first.

`ResponseParsing` is a mixin of `lb.transport.connection.Connection`, whose state it reads and
changes (each method is typed `self`); it is apart only to keep each module readable.
"""

from __future__ import annotations

import asyncio
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, NoReturn, cast

import httptools
import httpx

from lb.exceptions import LBError
from lb.transport.errors import tag
from lb.transport.framing import faulty_framing, keepalive_limit, persistent
from lb.transport.stream import ResponseStream

if TYPE_CHECKING:
    from lb.transport.connection import Connection, Interim
    from lb.transport.pool import OriginPool

MAX_HEAD_BYTES: Final = 64 * 1024  # llhttp sets no limit; a backend must not grow us forever
_HTTP_VERSIONS: Final = MappingProxyType({"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"})


class StrayData(LBError):
    """The backend sent bytes outside any exchange (raised inside the parser to stop it)."""


class ResponseParsing:
    if not TYPE_CHECKING:
        __slots__ = ()  # the state is the connection's slots (for mypy: declared below)
    else:
        pool: OriginPool[Connection]
        transport: asyncio.Transport | None
        closed: bool
        keepalive: float
        reading_paused: bool
        _parser: httptools.HttpResponseParser
        _inflight: bool
        _head_bytes: int
        _is_head: bool
        _request: httpx.Request | None
        _request_done: bool
        _read_timeout: float | None
        _head_waiter: asyncio.Future[ResponseStream] | None
        _head_deadline: float | None
        _reason: bytes
        _headers: list[tuple[bytes, bytes]]
        _interim: bool
        _on_interim: Interim | None
        _coded: bool
        _status: int
        _stream: ResponseStream | None

        def abort(self, error: BaseException | None) -> None: ...
        def close(self) -> None: ...
        def resume_reading(self) -> None: ...

    # -- parser callbacks (httptools finds them by name) ---------------------------------------

    def on_message_begin(self) -> None:
        self._headers = []
        self._reason = b""
        self._coded = False
        if self._head_waiter is None:
            raise StrayData("a response nobody asked for")

    def on_status(self, status: bytes) -> None:
        self._reason += status  # llhttp may deliver it in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        # Two names matter here; comparing lengths first spares the others the lower-casing.
        size = len(name)
        if size == 10 and name.lower() == b"keep-alive":
            limit = keepalive_limit(value)
            if limit is not None and limit < self.keepalive:
                self.keepalive = limit
        elif size == 17 and name.lower() == b"transfer-encoding":
            self._coded = True

    def on_headers_complete(self) -> None:
        # A head that arrived in one large read slipped past the check in data_received: count
        # it exactly, only then (reads over MAX_HEAD_BYTES are rare).
        if self._head_bytes > MAX_HEAD_BYTES and _head_size(self._headers) > MAX_HEAD_BYTES:
            self._reject(f"response head over {MAX_HEAD_BYTES} bytes")
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:
            if status < 100:
                self._reject(f"status {status} outside 100-599")
            if status != 101:
                # 100 Continue, 103 Early Hints: the final response follows. 100 answers the
                # request's Expect, which the client's own server has answered already.
                self._interim = True
                sink = self._on_interim
                if sink is not None and status != 100:
                    sink(status, self._headers)
                return
        elif status > 599:
            self._reject(f"status {status} outside 100-599")
        version = parser.get_http_version()
        if self._coded:
            fault = faulty_framing(version, self._headers)
            if fault is not None:
                self._reject(fault)
        http_version = _HTTP_VERSIONS.get(version)
        if http_version is None:
            if not version.startswith("1."):
                self._reject(f"HTTP/{version} on an HTTP/1.1 connection")
            http_version = b"HTTP/" + version.encode()
        waiter = self._head_waiter
        if waiter is None or waiter.done():  # done: the caller was cancelled a moment ago
            raise StrayData("a response nobody waits for")
        self._head_waiter = None
        self._head_deadline = None  # the timer, if any, stays for the next exchange
        stream = ResponseStream(
            self,  # type: ignore[arg-type]  # always a Connection (the one class using this mixin)
            status,
            self._headers,
            self._reason,
            http_version,
            self._read_timeout,
            self._request,
        )
        self._stream = stream
        self._status = status
        waiter.set_result(stream)
        if self._is_head:
            # llhttp cannot know the request was HEAD and would wait for Content-Length bytes
            # that never come. End the response here; the next one gets a fresh parser (this
            # one may still see stray bytes from this same read, and raises StrayData on them).
            # Nor can llhttp's keep-alive answer be used: for a head without Content-Length it
            # expects a body up to EOF. Only the version and Connection header count here.
            keep_alive = persistent(version, self._headers)
            self._parser = httptools.HttpResponseParser(self)
            self._finish(keep_alive)

    def _reject(self, reason: str) -> NoReturn:
        """Fail the exchange on a response head lb will not relay, and stop the parser."""
        error = httpx.RemoteProtocolError(
            f"malformed response from the backend: {reason}", request=self._request
        )
        self.abort(tag(error, sent=True))
        raise StrayData(reason)

    def on_body(self, body: bytes) -> None:
        stream = self._stream
        if stream is None:
            raise StrayData("body bytes after the response ended")
        if stream.feed(body) and not self.reading_paused:
            self.reading_paused = True
            cast(asyncio.Transport, self.transport).pause_reading()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._stream is None:
            raise StrayData("a response nobody asked for")
        # 101 Switching Protocols: the connection now speaks something else; never reuse it.
        self._finish(self._parser.should_keep_alive() and self._status != 101)

    def _finish(self, keep_alive: bool) -> None:
        stream = self._stream
        if stream is not None:
            self._stream = None
            stream.end()
        self._inflight = False
        self._request = None
        self._on_interim = None  # it holds the client's connection: not past the exchange
        if self.reading_paused:
            self.resume_reading()  # an idle connection must see the backend's FIN
        if keep_alive and self._request_done and not self.closed:
            self.pool.release(self)  # type: ignore[arg-type]  # always a Connection
        else:
            # Also when the request body is still being sent: the backend answered early
            # and will not read the rest, so the connection cannot be reused.
            self.close()


def _head_size(headers: list[tuple[bytes, bytes]]) -> int:
    return sum(len(name) + len(value) + 4 for name, value in headers)
