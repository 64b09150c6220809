"""lb.transport.connection: the protocol fed scripted bytes through a fake asyncio transport."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from lb.transport.connection import Connection
from lb.transport.errors import StaleConnection
from lb.transport.pool import OriginPool
from lb.transport.stream import HIGH_WATER, ResponseStream


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.state = "open"  # open, closed, aborted
        self.paused = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self.state = "closed"

    def abort(self) -> None:
        self.state = "aborted"

    def is_closing(self) -> bool:
        return self.state != "open"

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def connect() -> tuple[Connection, FakeTransport, OriginPool[Connection]]:
    loop = asyncio.get_running_loop()
    pool: OriginPool[Connection] = OriginPool(
        "http://backend:80", max_connections=4, max_idle=4, keepalive_expiry=30, clock=loop.time
    )
    assert pool.reserve()
    conn = Connection(pool, loop)
    pool.connections.add(conn)
    fake = FakeTransport()
    conn.connection_made(fake)
    return conn, fake, pool


async def send(
    conn: Connection, method: str = "GET", read_timeout: float | None = None
) -> asyncio.Task[ResponseStream]:
    request = httpx.Request(method, "http://backend/")
    task = asyncio.create_task(
        conn.exchange(request, method == "HEAD", b"%s / HTTP/1.1\r\n\r\n" % method.encode(),
                      b"", None, None, read_timeout, None)
    )  # fmt: skip
    await asyncio.sleep(0)  # let it write and start waiting
    return task


async def body(stream: ResponseStream) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_response_fed_one_byte_at_a_time() -> None:
    conn, fake, pool = connect()
    task = await send(conn)
    assert fake.written == b"GET / HTTP/1.1\r\n\r\n"
    response = (
        b"HTTP/1.1 200 Very OK\r\nA: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    for i in range(len(response)):
        conn.data_received(response[i : i + 1])
    stream = await task
    assert (stream.status, stream.reason) == (200, b"Very OK")
    assert stream.headers == [(b"A", b"1"), (b"Transfer-Encoding", b"chunked")]
    assert await body(stream) == b"abc"
    assert list(pool.idle) == [conn]


async def test_head_response_ends_at_its_head_and_the_parser_is_renewed() -> None:
    conn, fake, pool = connect()
    task = await send(conn, "HEAD")
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
    stream = await task
    assert stream.done and await body(stream) == b""
    assert list(pool.idle) == [conn]
    pool.take_idle()
    task = await send(conn)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert await body(await task) == b"ok"


@pytest.mark.parametrize(
    ("version", "connection", "reused"),
    [
        (b"1.1", b"", True),
        (b"1.1", b"Connection: close\r\n", False),
        (b"1.1", b"Connection: Keep-Alive, Close\r\n", False),
        (b"1.0", b"", False),
        (b"1.0", b"Connection: keep-alive\r\n", True),
    ],
)
async def test_head_response_persistence(version: bytes, connection: bytes, reused: bool) -> None:
    conn, fake, pool = connect()
    task = await send(conn, "HEAD")
    conn.data_received(b"HTTP/%s 200 OK\r\n%sContent-Length: 9\r\n\r\n" % (version, connection))
    await body(await task)
    assert (conn in pool.idle) is reused
    assert fake.state == ("open" if reused else "closed")


async def test_bytes_after_a_head_response_close_the_connection() -> None:
    conn, fake, pool = connect()
    task = await send(conn, "HEAD")
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert await body(await task) == b""
    assert conn.closed and fake.state == "aborted" and not pool.idle and pool.size == 0


async def test_bytes_on_an_idle_connection_close_it() -> None:
    conn, fake, pool = connect()
    task = await send(conn)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await body(await task)
    assert list(pool.idle) == [conn]
    conn.data_received(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    assert conn.closed and not pool.idle and pool.size == 0


async def test_reading_pauses_above_high_water_and_resumes_when_drained() -> None:
    conn, fake, pool = connect()
    task = await send(conn)
    total = 3 * HIGH_WATER
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
    stream = await task
    piece = b"x" * (HIGH_WATER // 4)
    for _ in range(5):
        conn.data_received(piece)
    assert fake.paused and conn.reading_paused
    received = len(await stream.__anext__())
    assert not fake.paused
    while received < total:
        conn.data_received(piece)
        received += len(await stream.__anext__())
    assert received == total and stream.done and conn in pool.idle


async def test_eof_before_any_byte_is_stale_and_after_some_is_an_error() -> None:
    conn, fake, pool = connect()
    task = await send(conn)
    conn.eof_received()
    with pytest.raises(StaleConnection):
        await task
    assert pool.size == 0

    conn, fake, pool = connect()
    task = await send(conn)
    conn.data_received(b"HTTP/1.1 200")
    conn.connection_lost(ConnectionResetError(104, "reset"))
    with pytest.raises(httpx.ReadError) as info:
        await task
    assert isinstance(info.value.__cause__, ConnectionResetError)


async def test_read_timeout_fires_only_after_the_request_is_sent() -> None:
    conn, fake, pool = connect()
    task = await send(conn, read_timeout=0.01)
    with pytest.raises(httpx.ReadTimeout):
        await task
    assert fake.state == "aborted" and pool.size == 0


async def test_interim_responses_are_skipped() -> None:
    conn, fake, pool = connect()
    task = await send(conn)
    conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n")
    assert not task.done()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    stream = await task
    assert stream.status == 200 and stream.headers == [(b"Content-Length", b"0")]


async def test_repr() -> None:
    conn, fake, pool = connect()
    assert repr(conn) == "<Connection http://backend:80 [idle]>"
    task = await send(conn)
    assert repr(conn) == "<Connection http://backend:80 [active]>"
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
    stream = await task
    assert repr(stream) == "<ResponseStream [200, receiving, buffered: 2]>"
    await stream.aclose()
    assert repr(conn) == "<Connection http://backend:80 [closed]>"


async def test_endless_response_head_is_refused() -> None:
    conn, fake, pool = connect()
    task = await send(conn)
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    for _ in range(100):
        conn.data_received(b"X-Filler: " + b"y" * 1000 + b"\r\n")
    with pytest.raises(httpx.RemoteProtocolError, match="head over"):
        await task
    assert fake.state == "aborted"


def test_complete_body_only_once_the_whole_body_is_in() -> None:
    from typing import Any, cast

    from lb.transport.stream import ResponseStream

    conn = cast(Any, None)  # feed/end/fail never touch the connection
    stream = ResponseStream(conn, 200, [], b"OK", b"1.1", None, None)
    assert stream.complete_body() is None  # nothing yet, not done
    stream.feed(b"hel")
    stream.feed(b"lo")
    assert stream.complete_body() is None  # more may come
    stream.end()
    assert stream.complete_body() == b"hello" and stream.size == 0
    assert stream.complete_body() == b""  # taken: nothing left
    failed = ResponseStream(conn, 200, [], b"OK", b"1.1", None, None)
    failed.feed(b"part")
    failed.fail(RuntimeError("reset"))
    assert failed.complete_body() is None  # a broken body is never handed over as whole


async def test_a_request_cancelled_after_its_whole_response_leaves_the_connection_alone() -> None:
    # The client went away (its request task cancelled) in the moment between the response
    # completing, which hands the connection back to the pool, and the task resuming. Tearing
    # the connection down then would break the next request on it (a 502 under load, when it
    # has gone to another request already).
    conn, fake, pool = connect()
    task = await send(conn)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert conn in pool.idle  # complete: released, and the task has not run since
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.state == "open" and not conn.closed
    assert pool.take_idle() is conn
    second = await send(conn)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert await body(await second) == b"ok"


async def test_a_request_cancelled_mid_response_drops_the_connection() -> None:
    conn, fake, pool = connect()
    task = await send(conn)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")  # 8 bytes to come
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.state == "aborted" and conn not in pool.idle


async def test_a_request_cancelled_as_its_body_ends_leaves_the_connection_alone() -> None:
    conn, fake, pool = connect()
    task = await send(conn)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok")
    stream = await task
    reading = asyncio.create_task(body(stream))
    await asyncio.sleep(0)  # it takes "ok" and waits for the rest
    conn.data_received(b"!!")  # the end: released to the pool, the reader not yet resumed
    assert conn in pool.idle
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert fake.state == "open" and pool.take_idle() is conn
