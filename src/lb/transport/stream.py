"""The response body as httpx sees it: an AsyncByteStream fed by the connection's parser.

Chunks are transfer-decoded (no chunked framing) and never content-decoded. The stream
holds what the parser delivered until the consumer takes it; above `HIGH_WATER` unread bytes
the connection stops reading from the socket, so a slow consumer makes the backend wait
instead of filling memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

import httpx

from lb.transport.errors import tag

if TYPE_CHECKING:
    from lb.transport.connection import Connection

HIGH_WATER: Final = 256 * 1024


class ResponseStream(httpx.AsyncByteStream):
    """One response: its head, and its body as it arrives.

    `conn` is set while the body is still arriving; the connection drops it (and may go back
    to the pool) as soon as the body is complete, before the consumer has read it all.
    """

    __slots__ = (
        "status",
        "headers",
        "reason",
        "http_version",
        "conn",
        "chunks",
        "size",
        "done",
        "error",
        "waiter",
        "read_timeout",
        "request",
    )

    def __init__(
        self,
        conn: Connection,
        status: int,
        headers: list[tuple[bytes, bytes]],
        reason: bytes,
        http_version: bytes,
        read_timeout: float | None,
        request: httpx.Request | None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.reason = reason
        self.http_version = http_version
        self.conn: Connection | None = conn
        # A list, not a deque: every reader takes all of it at once, and a list is cheaper to make.
        self.chunks: list[bytes] = []
        self.size = 0  # bytes in `chunks`
        self.done = False  # the whole body has arrived
        self.error: BaseException | None = None  # raised once `chunks` is drained
        self.waiter: asyncio.Future[None] | None = None
        self.read_timeout = read_timeout
        self.request = request

    def __repr__(self) -> str:
        state = "done" if self.done else "failed" if self.error else "receiving"
        return f"<ResponseStream [{self.status}, {state}, buffered: {self.size}]>"

    # Called by the connection (synchronously, from the parser callbacks).

    def feed(self, data: bytes) -> bool:
        """Append a body chunk; True when the consumer is behind and reading should pause."""
        self.chunks.append(data)
        self.size += len(data)
        waiter = self.waiter  # wake(), inline: once per body part of every response
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return self.size > HIGH_WATER

    def end(self) -> None:
        self.done = True
        self.conn = None
        waiter = self.waiter  # wake(), inline
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def fail(self, error: BaseException) -> None:
        if not self.done and self.error is None:
            self.error = error
        self.conn = None
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def complete_body(self) -> bytes | None:
        """The whole body when all of it has arrived (a small response usually lands with its
        head), else None: the proxy then sends it on without iterating."""
        if not self.done or self.error is not None:
            return None
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.size = 0
        return data

    # The httpx side.

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        chunks = self.chunks
        while not chunks:
            if self.error is not None:
                raise self.error
            if self.done:
                raise StopAsyncIteration
            await self._wait()
        # Hand over everything that arrived since the last call in one piece: fewer writes
        # downstream, and a streamed response still gets each burst as soon as it lands.
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.size = 0
        conn = self.conn
        if conn is not None and conn.reading_paused:
            conn.resume_reading()
        return data

    async def _wait(self) -> None:
        conn = self.conn
        assert conn is not None  # neither done nor failed, so the connection is still feeding us
        waiter = conn.loop.create_future()
        self.waiter = waiter
        timeout = self.read_timeout
        timer = None if timeout is None else conn.loop.call_later(timeout, self._timed_out)
        try:
            await waiter
        except BaseException:
            # Cancelled mid-body (the client went away): the rest of the body is unwanted
            # and the connection is mid-response, so it cannot be reused. Unless the body ended
            # in the moment before the task resumed (`end` let go of the connection, which went
            # back to the pool, maybe to another request already): then it is not ours to drop.
            self.waiter = None
            if self.conn is not None:
                self.conn.abort(self._closed_error())
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _timed_out(self) -> None:
        conn = self.conn
        if conn is not None:
            error = httpx.ReadTimeout(
                "timed out waiting for the response body", request=self.request
            )
            conn.abort(tag(error, sent=True))

    async def aclose(self) -> None:
        """Before the body has fully arrived, this closes the connection (never reused)."""
        conn = self.conn
        if conn is not None:
            conn.abort(self._closed_error())
        self.chunks.clear()
        self.size = 0

    def _closed_error(self) -> httpx.StreamClosed:
        return tag(httpx.StreamClosed(), sent=True)
