"""One upstream HTTP/1.1 connection: an asyncio Protocol that writes a request and parses the
response with llhttp (httptools), one exchange at a time.

All state changes happen in the protocol callbacks or in plain method calls, never across an
`await`: the request coroutine only waits on futures that the callbacks resolve. An exchange
ends in exactly one of three ways: the response is complete (the connection goes back to its
pool, or closes), an error is handed to whoever waits (the request coroutine before the head,
the body stream after it), or the caller abandons it (the connection is aborted).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final, cast

import httptools
import httpx

from lb.transport.errors import StaleConnection, disconnected, tag
from lb.transport.framing import (
    LAST_CHUNK,
    ends_at_close,
)
from lb.transport.parsing import MAX_HEAD_BYTES, ResponseParsing
from lb.transport.stream import ResponseStream

if TYPE_CHECKING:
    from lb.transport.pool import OriginPool

COALESCE_LIMIT: Final = 64 * 1024  # a body this small is written with the head, in one send

# Called with each interim (1xx) response but 100 and 101, synchronously, from the parser.
Interim = Callable[[int, list[tuple[bytes, bytes]]], None]


class Connection(ResponseParsing, asyncio.Protocol):
    __slots__ = (
        "pool",
        "loop",
        "transport",
        "closed",
        "pooled",
        "expires",
        "keepalive",
        "exchanges",
        "reading_paused",
        "_parser",
        "_inflight",
        "_received",
        "_head_bytes",
        "_is_head",
        "_request",
        "_request_done",
        "_read_timeout",
        "_head_waiter",
        "_head_timer",
        "_head_deadline",
        "_reason",
        "_headers",
        "_interim",
        "_on_interim",
        "_coded",
        "_status",
        "_stream",
        "_upload",
        "_writing_paused",
        "_drain_waiter",
    )

    def __init__(self, pool: OriginPool[Connection], loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.pooled = False
        self.expires = 0.0  # while pooled: the clock time after which it must not be used
        # Seconds it may stay idle after the current exchange: the request's idle timeout,
        # lowered by the backend's Keep-Alive header; the pool reads it on release.
        self.keepalive = pool.keepalive_expiry
        self.exchanges = 0  # for the pool's max_requests (limits.max_requests_per_connection)
        self.reading_paused = False
        self._parser = httptools.HttpResponseParser(self)
        # The current exchange.
        self._inflight = False  # a request was written and its response is not complete
        self._received = False  # any byte of the response arrived (else: a stale connection)
        self._head_bytes = 0  # received while waiting for the head (1xx included)
        self._is_head = False
        self._request: httpx.Request | None = None
        self._request_done = True  # the whole request body has been written
        self._read_timeout: float | None = None
        self._head_waiter: asyncio.Future[ResponseStream] | None = None
        # The read timeout for the head: a deadline, and a timer that may outlive it (see _sent).
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_deadline: float | None = None
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._interim = False  # parsing a 1xx response (never the exchange's result)
        self._on_interim: Interim | None = None
        self._coded = False  # the response being parsed has a Transfer-Encoding header
        self._status = 0
        self._stream: ResponseStream | None = None  # set from the head until the body is complete
        self._upload: asyncio.Task[None] | None = None  # the rest of a streamed request body
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "active" if self._inflight else "idle"
        return f"<Connection {self.pool.origin} [{state}]>"

    # -- the exchange, driven by the request coroutine ---------------------------------------

    async def exchange(
        self,
        request: httpx.Request | None,
        is_head: bool,
        head: bytes,
        body: bytes,
        rest: AsyncIterator[bytes] | None,
        remaining: int | None,
        read_timeout: float | None,
        write_timeout: float | None,
        interim: Interim | None = None,
    ) -> ResponseStream:
        """Send a request and wait for the final response head; the body streams afterwards.

        `body` is the framed body, or its first part when `rest` streams the remainder (as
        raw chunks: chunked framing when `remaining` is None, else `remaining` bytes exactly).
        Raises StaleConnection if the connection closed before any response byte arrived.
        `request` only goes into the exceptions (None on the raw path, see `Transport.send_raw`).
        `interim` hears of each interim response the backend sends but 100 Continue.
        """
        transport = self.transport
        assert transport is not None  # pooled connections are connected
        self._inflight = True
        number = self.exchanges = self.exchanges + 1
        self._received = False
        self._head_bytes = 0
        self._is_head = is_head
        self._request = request
        self._read_timeout = read_timeout
        self._on_interim = interim
        waiter: asyncio.Future[ResponseStream] = self.loop.create_future()
        self._head_waiter = waiter
        try:
            if not body:
                transport.write(head)
            elif len(body) <= COALESCE_LIMIT:
                transport.write(head + body)
            else:
                transport.writelines((head, body))
            if rest is None:
                # What _sent() does, inline: this is every bodiless request's path.
                self._request_done = True
                if read_timeout is not None:
                    deadline = self._head_deadline = self.loop.time() + read_timeout
                    if self._head_timer is None:
                        self._head_timer = self.loop.call_at(deadline, self._check_head_deadline)
            else:
                # A task, so that a response arriving mid-upload (an early 413, or a backend
                # that echoes as it reads) is returned at once instead of after the upload.
                self._request_done = False
                self._upload = self.loop.create_task(
                    self._send_rest(rest, remaining, write_timeout)
                )
            return await waiter
        except BaseException:
            waiter.cancel()  # nobody else will await it
            # Cancelled, timed out or failed mid-exchange: the connection is unusable. Unless
            # the exchange is over already: the whole response came in the moment before the
            # task resumed, and the connection went back to the pool, maybe to another request.
            if self._inflight and self.exchanges == number:
                self.abort(None)
            raise

    def _sent(self) -> None:
        """The whole request is written: now the wait for the head counts as a read."""
        self._request_done = True
        if self._head_waiter is not None and self._read_timeout is not None:
            # A timer per exchange (armed, then cancelled) would cost more than a small exchange's
            # parsing. The deadline moves with each exchange instead, and one timer per connection
            # follows it: when it fires early (the head came, another exchange began) it re-arms.
            deadline = self._head_deadline = self.loop.time() + self._read_timeout
            if self._head_timer is None:
                self._head_timer = self.loop.call_at(deadline, self._check_head_deadline)

    def _check_head_deadline(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None or self.closed:
            return  # no head awaited now
        if self.loop.time() < deadline:
            self._head_timer = self.loop.call_at(deadline, self._check_head_deadline)
        else:
            self._head_timed_out()

    async def _send_rest(
        self, rest: AsyncIterator[bytes], remaining: int | None, write_timeout: float | None
    ) -> None:
        transport = self.transport
        assert transport is not None
        try:
            async for chunk in rest:
                if self.closed:
                    return
                if not chunk:
                    continue  # an empty chunk would end a chunked body
                if remaining is None:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    remaining -= len(chunk)
                    if remaining < 0:
                        raise self._body_error("request body longer than its Content-Length")
                    transport.write(chunk)
                    if not remaining:
                        # No drain: see at once whether the source ends, before a response
                        # (which may now come) finds the request unfinished and closes.
                        continue
                if self._writing_paused:
                    await self._drain(write_timeout)
                    if self.closed:
                        return
            if self.closed:
                return
            if remaining is None:
                transport.write(LAST_CHUNK)
            elif remaining:
                raise self._body_error("request body shorter than its Content-Length")
        except Exception as exc:
            # The request stream failed (e.g. the client went away): whoever waits for the
            # response gets the caller's own exception; the connection is mid-request.
            self._upload = None
            self.abort(exc)
            return
        self._upload = None
        self._sent()

    def _body_error(self, message: str) -> httpx.LocalProtocolError:
        return tag(httpx.LocalProtocolError(message, request=self._request), sent=True)

    async def _drain(self, timeout: float | None) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiter = waiter
        timer = None if timeout is None else self.loop.call_later(timeout, self._write_timed_out)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        error = httpx.ReadTimeout("timed out waiting for the response head", request=self._request)
        self.abort(tag(error, sent=True))

    def _write_timed_out(self) -> None:
        error = httpx.WriteTimeout("timed out writing the request body", request=self._request)
        self.abort(tag(error, sent=True))

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close an idle or finished connection gracefully."""
        self._shutdown(abort=False)

    def abort(self, error: BaseException | None) -> None:
        """Drop the connection now; `error` goes to whoever waits on the current exchange."""
        if error is not None:
            self._deliver(error)
        self._shutdown(abort=True)

    def _deliver(self, error: BaseException) -> None:
        waiter = self._head_waiter
        if waiter is not None:
            self._head_waiter = None
            if not waiter.done():
                waiter.set_exception(error)
            return
        stream = self._stream
        if stream is not None:
            self._stream = None
            stream.fail(error)

    def _shutdown(self, *, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self._inflight = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._head_waiter is not None or self._stream is not None:
            message = "connection closed before the response was complete"
            closed = httpx.ReadError(message, request=self._request)
            self._deliver(tag(closed, sent=True))
        upload = self._upload
        if upload is not None:
            self._upload = None
            upload.cancel()
        self._wake_writer()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        self.pool.discard(self)

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Small requests must leave now, not wait for the ACK of the previous segment.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self._inflight:
            self.abort(None)  # unsolicited bytes (e.g. a 408 before an idle close)
            return
        self._received = True
        if self._head_waiter is not None:
            # Checked before feeding: a head may end in this read, so it can be up to
            # MAX_HEAD_BYTES plus one read long, and the common case costs one addition.
            if self._head_bytes > MAX_HEAD_BYTES:
                error = httpx.RemoteProtocolError(
                    f"response head over {MAX_HEAD_BYTES} bytes", request=self._request
                )
                self.abort(tag(error, sent=True))
                return
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # 101: the response ended at its head; what follows is another protocol, and the
            # connection is never reused (on_message_complete has closed it).
            if self._stream is not None:
                self._finish(keep_alive=False)
        except httptools.HttpParserError as exc:
            error = httpx.RemoteProtocolError(
                f"malformed response from the backend: {exc}", request=self._request
            )
            error.__cause__ = exc
            self.abort(tag(error, sent=True))

    def eof_received(self) -> bool | None:
        self._lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    def _lost(self, exc: Exception | None) -> None:
        """The backend closed (EOF) or the socket failed."""
        if self._inflight:
            if self._head_waiter is not None:
                if self._received:
                    error: Exception = disconnected(self._request, exc, "the response head")
                else:
                    error = StaleConnection("connection closed before any byte of the response")
                    error.__cause__ = exc
                self._deliver(error)
            elif self._stream is not None:
                if exc is None and ends_at_close(self._headers):
                    self._finish(keep_alive=False)
                else:
                    self._deliver(disconnected(self._request, exc, "the response body"))
        self._shutdown(abort=exc is not None)
