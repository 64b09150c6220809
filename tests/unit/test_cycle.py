"""`lb.cycle.Cycle`: the request/response cycle writing the head with the first body part."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from lb.cycle import Cycle
from lb.httpwire import FlowControl
from lb.types import DISCONNECT_EXTENSION


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.write(b"".join(parts))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def cycle(method: str = "GET", keep_alive: bool = True) -> tuple[Cycle, FakeTransport, list[int]]:
    transport = FakeTransport()
    completed: list[int] = []
    scope = {"type": "http", "method": method, "headers": [], "http_version": "1.1"}
    logger = logging.getLogger("test.cycle")
    c = Cycle(
        scope,  # type: ignore[arg-type]
        transport,  # type: ignore[arg-type]
        FlowControl(transport),  # type: ignore[arg-type]
        logger,
        logger,
        False,
        [],
        False,
        keep_alive,
        lambda: completed.append(1),
        asyncio.get_running_loop(),
    )
    return c, transport, completed


def start(status: int = 200, **headers: bytes) -> dict[str, Any]:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(k.replace("_", "-").encode(), v) for k, v in headers.items()],
    }


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def test_a_small_response_is_one_write() -> None:
    c, transport, completed = cycle()
    await c.send(start(content_length=b"5"))
    await c.send(body(b"hello"))
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
    assert completed == [1] and c.response_complete and not transport.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left to write
    assert len(transport.writes) == 1


async def test_the_head_is_not_held_past_the_loop_turn() -> None:
    c, transport, _ = cycle()
    await c.send(start(content_type=b"text/event-stream"))
    assert transport.writes == []
    await asyncio.sleep(0)  # e.g. waiting for the backend's first event
    assert transport.writes == [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    ]
    await c.send(body(b"data: 1\n\n", more=True))
    await c.send(body(b""))
    assert transport.writes[1:] == [b"9\r\ndata: 1\n\n\r\n", b"0\r\n\r\n"]


async def test_chunked_head_and_last_chunk_together() -> None:
    c, transport, _ = cycle()
    await c.send(start())
    await c.send(body(b"abc"))
    assert transport.writes == [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ]


async def test_head_request_writes_the_head_only() -> None:
    c, transport, completed = cycle("HEAD")
    await c.send(start(content_length=b"100"))
    await c.send(body(b""))
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"]
    assert completed == [1]


async def test_a_large_body_follows_the_head_in_the_same_call() -> None:
    c, transport, _ = cycle()
    big = b"x" * (1 << 20)
    await c.send(start(content_length=str(len(big)).encode()))
    await c.send(body(big))
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n" + big]


async def test_no_keep_alive_closes_after_the_write() -> None:
    c, transport, _ = cycle(keep_alive=False)
    await c.send(start(content_length=b"2"))
    await c.send(body(b"ok"))
    assert transport.writes == [
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    ]
    assert transport.closed


async def test_uvicorn_checks_still_apply() -> None:
    c, _, _ = cycle()
    with pytest.raises(RuntimeError, match="Invalid HTTP header value"):
        await c.send(start(x_bad=b"a\nb"))
    c, _, _ = cycle()
    with pytest.raises(RuntimeError, match="Invalid HTTP header name"):
        await c.send({"type": "http.response.start", "status": 200, "headers": [(b"a b", b"1")]})
    c, _, _ = cycle()
    await c.send(start(content_length=b"2"))
    with pytest.raises(RuntimeError, match="longer than Content-Length"):
        await c.send(body(b"abc"))
    c, _, _ = cycle()
    with pytest.raises(RuntimeError, match="Expected ASGI message 'http.response.start'"):
        await c.send(body(b""))


async def test_an_app_failing_after_the_head_gets_it_written_before_the_close() -> None:
    c, transport, _ = cycle()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(content_length=b"10"))
        raise ValueError("boom")

    logging.getLogger("test.cycle").disabled = True
    try:
        await c.run_asgi(app)
    finally:
        logging.getLogger("test.cycle").disabled = False
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"]
    assert transport.closed


async def test_a_lost_client_calls_back_once_and_cancels_the_request() -> None:
    c, _, _ = cycle()
    calls: list[str] = []
    c.task = asyncio.get_running_loop().create_task(asyncio.sleep(10))
    c.scope["extensions"][DISCONNECT_EXTENSION](lambda: calls.append("gone"))  # type: ignore[typeddict-item]
    c.lost()
    c.lost()
    assert calls == ["gone"] and c.disconnected
    with pytest.raises(asyncio.CancelledError):
        await c.task

    c, _, _ = cycle()
    c.task = asyncio.get_running_loop().create_task(asyncio.sleep(0))
    register = c.scope["extensions"][DISCONNECT_EXTENSION]  # type: ignore[typeddict-item]
    register(lambda: calls.append("withdrawn"))
    register(None)
    c.lost()  # nobody registered: the task runs on
    await c.task
    assert calls == ["gone"] and c.disconnected


@pytest.mark.parametrize(
    ("method", "status", "headers", "data"),
    [
        ("GET", 200, {"content_length": b"5"}, b"hello"),
        ("GET", 200, {}, b"abc"),  # no length: chunked, as through ASGI
        ("HEAD", 200, {"content_length": b"100"}, b""),
        ("GET", 304, {"content_length": b"100"}, b""),
        ("GET", 204, {}, b""),
    ],
)
async def test_respond_writes_what_the_two_messages_write(
    method: str, status: int, headers: dict[str, bytes], data: bytes
) -> None:
    through_asgi, asgi_transport, asgi_completed = cycle(method)
    await through_asgi.send(start(status, **headers))
    await through_asgi.send(body(data))
    direct, transport, completed = cycle(method)
    assert direct.respond(status, start(status, **headers)["headers"], data)
    assert transport.writes == asgi_transport.writes and len(transport.writes) == 1
    assert completed == asgi_completed == [1] and direct.response_complete
    await asyncio.sleep(0)
    assert len(transport.writes) == 1  # no head left to flush


async def test_respond_declines_when_it_cannot_send_at_once() -> None:
    started, transport, _ = cycle()
    await started.send(start(content_length=b"2"))
    assert not started.respond(200, [], b"ok")
    paused, transport, _ = cycle()
    paused.flow.pause_writing()
    assert not paused.respond(200, [], b"ok") and not paused.response_started
    gone, transport, _ = cycle()
    gone.lost()
    assert not gone.respond(200, [], b"ok") and transport.writes == []


async def test_respond_closes_a_connection_not_kept_alive() -> None:
    c, transport, completed = cycle(keep_alive=False)
    assert c.respond(200, [(b"content-length", b"2")], b"ok")
    assert transport.writes == [
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    ]
    assert transport.closed and completed == [1]


async def test_head_hooks_rewrite_both_paths_inner_first() -> None:
    def add(tag: bytes) -> Any:
        return lambda headers: [*headers, (b"x-order", tag)]

    for direct in (True, False):
        c, transport, _ = cycle()
        c.on_head(add(b"outer"))
        c.on_head(add(b"inner"))  # registered later: a layer further in
        if direct:
            assert c.respond(200, [(b"content-length", b"2")], b"ok")
        else:
            await c.send(start(content_length=b"2"))
            await c.send(body(b"ok"))
        assert transport.writes == [
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-order: inner\r\nx-order: outer\r\n\r\nok"
        ]


async def test_the_servers_own_500_takes_no_hook() -> None:
    c, transport, _ = cycle()
    c.on_head(lambda headers: [*headers, (b"x-layer", b"1")])

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    await c.run_asgi(failing)
    assert transport.writes[0].startswith(b"HTTP/1.1 500 ")
    assert b"x-layer" not in transport.writes[0]
