"""lb.transport.Transport against real backends: uvicorn, and scripted raw TCP servers."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httptools
import httpx
import pytest

from lb.transport import Transport, request_sent
from lb.transport.stream import HIGH_WATER, ResponseStream
from programs import program
from servers import ThreadedServer, free_port

MiB = 1024 * 1024
FAST = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}

StartServer = Callable[..., ThreadedServer]
Handler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# -- helpers and fixtures ----------------------------------------------------------------------


async def eventually(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `condition` on the event loop until truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


class RawServer:
    """A TCP server on 127.0.0.1 that runs a scripted `handler` per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepts = 0
        self.closed = 0  # connections whose handler finished (the peer closed, or the script)
        self.requests: list[bytes] = []  # request heads, as read by `read_request`
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): on 3.11 a cancelled handler task would be logged as an error
        finally:
            self.closed += 1
            self.tasks.discard(task)
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        """One request: (head, body), the body read by Content-Length or chunked framing."""
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        lowered = head.lower()
        body = b""
        if b"transfer-encoding: chunked" in lowered:
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                body += (await reader.readexactly(size + 2))[:-2]
                if size == 0:
                    break
        elif b"content-length:" in lowered:
            length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
        return head, body

    async def stop(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(handler: Handler) -> RawServer:
        server = await RawServer(handler).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def transport() -> AsyncIterator[Transport]:
    t = Transport()
    yield t
    await t.aclose()


async def start_scripted(
    raw_server: Callable[[Handler], Awaitable[RawServer]],
    *responses: bytes,
    then_close: bool = False,
) -> RawServer:
    """A server answering successive requests on each connection with `responses`."""

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for response in responses:
            await server.read_request(reader)
            writer.write(response)
            await writer.drain()
        if not then_close:
            await reader.read()  # keep the connection until the client closes it

    return await raw_server(handler)


def get(url: str, path: str = "/", **kwargs: Any) -> httpx.Request:
    kwargs.setdefault("extensions", {"timeout": FAST})
    return httpx.Request("GET", url + path, **kwargs)


async def read_all(response: httpx.Response) -> bytes:
    try:
        return b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """uvicorn app: answers with what it saw, as JSON, plus two Set-Cookie headers."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    seen = {
        "method": scope["method"],
        "raw_path": scope["raw_path"].decode(),
        "query": scope["query_string"].decode(),
        "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
        "body": body.decode("latin-1"),
    }
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"set-cookie", b"a=1; Path=/"),
                (b"set-cookie", b"b=2; Path=/"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})


# -- round trips --------------------------------------------------------------------------------


async def test_request_head_is_written_byte_for_byte(raw_server: Any, transport: Transport) -> None:
    server = await start_scripted(raw_server, OK)
    request = httpx.Request(
        "GET",
        server.url,
        headers=[("X-B", "1"), ("x-a", "2"), ("X-B", "3")],
        extensions={"timeout": FAST, "target": b"/a%2Fb/../c?x=%20&y"},
    )
    response = await transport.handle_async_request(request)
    assert await read_all(response) == b"ok"
    port = server.url.rsplit(":", 1)[1]
    assert server.requests == [
        b"GET /a%2Fb/../c?x=%20&y HTTP/1.1\r\nHost: 127.0.0.1:" + port.encode() + b"\r\n"
        b"X-B: 1\r\nx-a: 2\r\nX-B: 3\r\n\r\n"
    ]


async def test_get_and_post_round_trip_through_uvicorn(
    start_server: StartServer, transport: Transport
) -> None:
    server = start_server(echo_app)
    request = get(server.url, extensions={"timeout": FAST, "target": b"/a%2Fb/../c?x=%20&y"})
    response = await transport.handle_async_request(request)
    assert response.status_code == 200
    assert response.extensions == {"http_version": b"HTTP/1.1", "reason_phrase": b"OK"}
    seen = json.loads(await read_all(response))
    assert (seen["method"], seen["raw_path"], seen["query"]) == ("GET", "/a%2Fb/../c", "x=%20&y")

    # Without the "target" extension the URL's raw path goes as is (httpx keeps %2F).
    request = httpx.Request("POST", server.url + "/a%2Fb/c?x=%20&y", content=b"payload")
    response = await transport.handle_async_request(request)
    seen = json.loads(await read_all(response))
    assert (seen["method"], seen["raw_path"], seen["query"]) == ("POST", "/a%2Fb/c", "x=%20&y")
    assert seen["body"] == "payload"
    assert ["content-length", "7"] in seen["headers"]


async def test_duplicate_set_cookie_kept_in_order(
    start_server: StartServer, transport: Transport
) -> None:
    server = start_server(echo_app)
    response = await transport.handle_async_request(get(server.url))
    await read_all(response)
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    names = [name.lower() for name, _ in response.headers.raw]
    assert names[:3] == [b"content-type", b"set-cookie", b"set-cookie"]


async def test_through_async_client_send_stream(start_server: StartServer) -> None:
    server = start_server(echo_app)
    transport = Transport()
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        request = client.build_request("POST", server.url + "/x", content=b"abc")
        response = await client.send(request, stream=True)
        try:
            body = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        assert response.status_code == 200 and response.request is request
        assert json.loads(body)["body"] == "abc"
        # The client's cookie jar is httpx's business; the transport carries no state.
        response = await client.get(server.url + "/y")
        assert response.status_code == 200
    assert repr(transport) == "<Transport [origins: 0, active: 0, idle: 0, closed]>"


async def test_gzip_body_passes_untouched(start_server: StartServer, transport: Transport) -> None:
    compressed = gzip.compress(b"hello " * 1000)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-encoding", b"gzip"), (b"content-length", b"%d" % len(compressed))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": compressed})

    server = start_server(app)
    response = await transport.handle_async_request(get(server.url))
    assert await read_all(response) == compressed
    assert response.headers["content-length"] == str(len(compressed))


async def test_https_backend(
    start_server: StartServer, tmp_path: Path, transport: Transport
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [program("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key),
         "-out", str(cert), "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = start_server(echo_app, ssl_certfile=str(cert), ssl_keyfile=str(key))
    url = server.url.replace("http://", "https://")
    secure = Transport(ssl_context=ssl.create_default_context(cafile=str(cert)))
    try:
        response = await secure.handle_async_request(get(url, "/tls"))
        assert json.loads(await read_all(response))["raw_path"] == "/tls"
    finally:
        await secure.aclose()
    # The default context does not trust a self-signed certificate: never reached the backend.
    with pytest.raises(httpx.ConnectError) as info:
        await transport.handle_async_request(get(url))
    assert request_sent(info.value) is False
    assert isinstance(info.value.__cause__, ssl.SSLError)


# -- streaming both ways ------------------------------------------------------------------------


@pytest.mark.parametrize("declared_length", [True, False])
async def test_large_streamed_upload_is_not_buffered(
    start_server: StartServer, transport: Transport, declared_length: bool
) -> None:
    total, size = 50 * MiB, 64 * 1024
    received = [0]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        digest = hashlib.sha256()
        while True:
            message = await receive()
            digest.update(message.get("body", b""))
            received[0] += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": digest.hexdigest().encode()})

    server = start_server(app)
    expected = hashlib.sha256()
    lead = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal lead
        produced = 0
        for i in range(total // size):
            chunk = bytes([i % 251]) * size
            expected.update(chunk)
            lead = max(lead, produced - received[0])
            produced += size
            yield chunk

    headers = {"content-length": str(total)} if declared_length else {}
    request = httpx.Request("PUT", server.url, content=body(), headers=headers)
    response = await transport.handle_async_request(request)
    assert await read_all(response) == expected.hexdigest().encode()
    assert received[0] == total
    # Write flow control: the generator never runs far ahead of the backend (socket buffers
    # and uvicorn's own buffer, not the whole 50 MiB).
    assert lead < 16 * MiB


async def test_large_download_streams_with_read_flow_control(
    start_server: StartServer, transport: Transport
) -> None:
    total, size = 50 * MiB, 64 * 1024
    produced = [0]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})  # chunked
        for i in range(total // size):
            produced[0] += size
            await send({"type": "http.response.body", "body": bytes([i % 251]) * size,
                        "more_body": True})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})

    server = start_server(app)
    response = await transport.handle_async_request(get(server.url))
    stream = response.stream
    assert isinstance(stream, ResponseStream)
    chunks = response.aiter_raw()
    received = len(await chunks.__anext__())

    # A consumer that stops reading: the backend stalls once the buffers are full, and what
    # the transport holds stays near HIGH_WATER (it stopped reading the socket).
    async def stalled() -> bool:
        before = produced[0]
        await asyncio.sleep(0.2)
        return produced[0] == before

    deadline = time.monotonic() + 10
    while not await stalled():
        assert time.monotonic() < deadline, "backend never stalled"
    assert stream.size <= HIGH_WATER + 256 * 1024
    assert produced[0] < 16 * MiB

    async for chunk in chunks:
        received += len(chunk)
    await response.aclose()
    assert received == total


async def test_chunked_response_streams_before_the_backend_finishes(
    start_server: StartServer, transport: Transport
) -> None:
    release = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        await send({"type": "http.response.body", "body": b"data: 2\n\n"})

    server = start_server(app)
    try:
        response = await transport.handle_async_request(get(server.url))
        chunks = response.aiter_raw()
        first = await asyncio.wait_for(chunks.__anext__(), 5)
        assert first == b"data: 1\n\n"
        release.set()
        assert b"".join([chunk async for chunk in chunks]) == b"data: 2\n\n"
        await response.aclose()
    finally:
        release.set()


async def test_streamed_request_without_length_is_sent_chunked(
    raw_server: Any, transport: Transport
) -> None:
    server = await start_scripted(raw_server, OK, OK)

    async def parts() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b""
        yield b"cde"

    async def nothing() -> AsyncIterator[bytes]:
        return
        yield b""

    for content in (parts(), nothing()):
        stream = httpx.Request("POST", server.url, content=content).stream
        # As the proxy builds them: a stream and no framing headers at all.
        request = httpx.Request("POST", server.url, stream=stream)
        assert await read_all(await transport.handle_async_request(request)) == b"ok"
    first, second = server.requests
    assert first.endswith(b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert b"transfer-encoding" not in second.lower() and b"content-length" not in second.lower()


async def test_early_response_stops_the_upload(raw_server: Any, transport: Transport) -> None:
    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await reader.read()  # never reads the body: just waits for the close

    server = await raw_server(handler)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536

    request = httpx.Request("POST", server.url, content=endless(), extensions={"timeout": FAST})
    response = await asyncio.wait_for(transport.handle_async_request(request), 10)
    assert response.status_code == 413
    assert await read_all(response) == b"big"
    await eventually(lambda: server.closed == 1)  # not reusable: the upload was cut short
    assert "active: 0, idle: 0" in repr(transport)


# -- message framing edge cases -----------------------------------------------------------------


async def test_head_response_with_content_length_has_no_body(
    raw_server: Any, transport: Transport
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    server = await start_scripted(raw_server, head, OK)
    request = httpx.Request("HEAD", server.url, extensions={"timeout": FAST})
    response = await transport.handle_async_request(request)
    assert await read_all(response) == b""
    assert response.headers["content-length"] == "1000"
    # The connection is reused, with a fresh parser: the next response parses normally.
    assert await read_all(await transport.handle_async_request(get(server.url))) == b"ok"
    assert server.accepts == 1


async def test_head_through_uvicorn_keeps_the_connection(
    start_server: StartServer, transport: Transport
) -> None:
    server = start_server(echo_app)
    for method in ("HEAD", "GET", "HEAD"):
        request = httpx.Request(method, server.url, extensions={"timeout": FAST})
        await read_all(await transport.handle_async_request(request))
    assert "idle: 1" in repr(transport)


async def test_204_and_304_have_no_body(raw_server: Any, transport: Transport) -> None:
    server = await start_scripted(
        raw_server,
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 500\r\nETag: x\r\n\r\n",
        OK,
    )
    for status in (204, 304, 200):
        response = await transport.handle_async_request(get(server.url))
        assert response.status_code == status
        assert await read_all(response) == (b"ok" if status == 200 else b"")
    assert server.accepts == 1


INTERIM = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
    b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nX-Final: yes\r\n\r\ndone"
)


async def test_interim_responses_are_skipped(raw_server: Any, transport: Transport) -> None:
    server = await start_scripted(raw_server, INTERIM)
    request = httpx.Request("POST", server.url, content=b"body", headers={"expect": "100-continue"})
    response = await transport.handle_async_request(request)
    assert response.status_code == 201
    assert response.headers.raw == [(b"Content-Length", b"4"), (b"X-Final", b"yes")]
    assert response.extensions["reason_phrase"] == b"Created"
    assert await read_all(response) == b"done"


async def test_interim_responses_go_to_the_callback_but_100(
    raw_server: Any, transport: Transport
) -> None:
    from lb.transport import origin_of

    server = await start_scripted(raw_server, INTERIM, OK)
    seen: list[tuple[int, list[tuple[bytes, bytes]]]] = []
    headers = [(b"Host", b"x"), (b"Content-Length", b"4"), (b"Expect", b"100-continue")]
    origin = origin_of(server.url)
    response = await transport.send_raw(
        origin, b"POST", b"/", headers, b"body", None, lambda *hint: seen.append(hint)
    )
    assert response.status == 201 and b"".join([c async for c in response]) == b"done"
    # 100 answers the Expect, which is lb's to answer to its client; 103 is the client's.
    assert seen == [(103, [(b"Link", b"</s.css>; rel=preload")])]
    response = await transport.send_raw(origin, b"GET", b"/", [(b"Host", b"x")])
    assert response.status == 200 and server.accepts == 1


async def test_101_is_returned_and_the_connection_never_reused(
    raw_server: Any, transport: Transport
) -> None:
    server = await start_scripted(
        raw_server,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"\x81\x02hi",
    )
    headers = {"upgrade": "websocket", "connection": "Upgrade"}
    response = await transport.handle_async_request(get(server.url, headers=headers))
    assert response.status_code == 101
    assert await read_all(response) == b""
    await eventually(lambda: server.closed == 1)
    assert await read_all(await transport.handle_async_request(get(server.url))) == b""
    assert server.accepts == 2


async def test_body_delimited_by_close(raw_server: Any, transport: Transport) -> None:
    server = await start_scripted(
        raw_server,
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
        then_close=True,
    )
    response = await transport.handle_async_request(get(server.url))
    assert response.extensions["http_version"] == b"HTTP/1.0"
    assert await read_all(response) == b"until the end"
    assert "active: 0, idle: 0" in repr(transport)


# -- connection reuse -------------------------------------------------------------------------


async def test_keep_alive_reuses_connections(raw_server: Any, transport: Transport) -> None:
    server = await start_scripted(raw_server, *[OK] * 30)
    for _ in range(5):
        assert await read_all(await transport.handle_async_request(get(server.url))) == b"ok"
    assert server.accepts == 1

    async def one() -> bytes:
        return await read_all(await transport.handle_async_request(get(server.url)))

    assert await asyncio.gather(*(one() for _ in range(10))) == [b"ok"] * 10
    accepts = server.accepts
    assert 1 <= accepts <= 10
    assert await asyncio.gather(*(one() for _ in range(accepts))) == [b"ok"] * accepts
    assert server.accepts == accepts  # all of them reused
    assert repr(transport) == f"<Transport [origins: 1, active: 0, idle: {accepts}]>"


async def test_connection_close_from_backend_is_honoured(
    raw_server: Any, transport: Transport
) -> None:
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    server = await start_scripted(raw_server, closing)
    for _ in range(2):
        assert await read_all(await transport.handle_async_request(get(server.url))) == b"ok"
    assert server.accepts == 2
    await eventually(lambda: server.closed == 2)


async def test_idle_connection_closed_by_backend_leaves_the_pool_at_once(
    raw_server: Any, transport: Transport
) -> None:
    server = await start_scripted(raw_server, OK, then_close=True)
    assert await read_all(await transport.handle_async_request(get(server.url))) == b"ok"
    await eventually(lambda: "idle: 0" in repr(transport))
    assert await read_all(await transport.handle_async_request(get(server.url))) == b"ok"
    assert server.accepts == 2


class Chunks(httpx.AsyncByteStream):
    """A streamed request body; `replayable` says whether the transport may iterate it again."""

    def __init__(self, *chunks: bytes, replayable: bool) -> None:
        self.chunks = chunks
        self.replayable = replayable

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            await asyncio.sleep(0)  # a client's body arrives in pieces
            yield chunk


async def test_stale_connection_is_sent_again_with_its_body(
    raw_server: Any, transport: Transport
) -> None:
    bodies: list[bytes] = []

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Answer one request, then drop the connection when the next one arrives: what a
        # backend closing an idle connection looks like when the request crosses the FIN.
        bodies.append((await server.read_request(reader))[1])
        writer.write(OK)
        await reader.readuntil(b"\r\n\r\n")

    server = await raw_server(handler)

    async def send(method: str, content: Any, length: int | None = None) -> bytes:
        headers = {} if length is None else {"content-length": str(length)}
        body = {"content": content} if isinstance(content, bytes) else {"stream": content}
        request = httpx.Request(
            method, server.url, headers=headers, extensions={"timeout": FAST}, **body
        )
        return await read_all(await transport.handle_async_request(request))

    assert await send("GET", b"") == b"ok"
    for method, content, length in [
        ("GET", b"", None),
        ("POST", b"data", None),  # a whole body: sent again as it was
        ("PUT", Chunks(b"ab", b"cd", replayable=True), 4),  # iterated again
        ("POST", Chunks(b"ab", b"cd", replayable=True), None),  # chunked, iterated again
    ]:
        assert await send(method, content, length) == b"ok"
    assert bodies == [b"", b"", b"data", b"abcd", b"abcd"]
    assert server.accepts == 5

    # A streamed body that cannot be had again is the one failure, reported as "may have
    # been sent" (lb's RequestBody says so past 64 KiB).
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)) as info:  # FIN or reset
        await send("POST", Chunks(b"ab", b"cd", replayable=False), 4)
    assert request_sent(info.value) is True
    assert server.accepts == 5 and bodies[-1] == b"abcd"


async def test_keep_alive_header_retires_the_connection_before_the_backend_does(
    raw_server: Any, transport: Transport
) -> None:
    hinted = b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok"
    server = await start_scripted(raw_server, hinted, hinted, hinted)
    assert await read_all(await transport.handle_async_request(get(server.url))) == b"ok"
    assert await read_all(await transport.handle_async_request(get(server.url))) == b"ok"
    assert server.accepts == 1
    await asyncio.sleep(0.6)  # past 1 s less the margin (half of it here); the backend keeps it
    assert await read_all(await transport.handle_async_request(get(server.url))) == b"ok"
    assert server.accepts == 2


async def test_idle_timeout_of_the_request_retires_the_connection(raw_server: Any) -> None:
    from lb.transport import Timeouts, origin_of

    server = await start_scripted(raw_server, OK, OK, OK)
    transport = Transport()  # 4 s by default; each request may say otherwise
    try:
        origin, short = origin_of(server.url), Timeouts(5, 5, 5, 5, idle=0.2)
        for pause in (0, 0.05, 0.3):
            await asyncio.sleep(pause)
            response = await transport.send_raw(origin, b"GET", b"/", [], b"", short)
            assert b"".join([chunk async for chunk in response]) == b"ok"
        assert server.accepts == 2  # the third found the first retired
    finally:
        await transport.aclose()


async def test_idle_connections_expire(raw_server: Any) -> None:
    server = await start_scripted(raw_server, OK)
    transport = Transport(keepalive_expiry=0.1)
    try:
        assert await read_all(await transport.handle_async_request(get(server.url))) == b"ok"
        await eventually(lambda: server.closed == 1)  # the reaper closed it
        assert repr(transport) == "<Transport [origins: 0, active: 0, idle: 0]>"
    finally:
        await transport.aclose()


# -- failures -----------------------------------------------------------------------------------


async def test_connect_refused(transport: Transport) -> None:
    with pytest.raises(httpx.ConnectError) as info:
        await transport.handle_async_request(get(f"http://127.0.0.1:{free_port()}"))
    assert request_sent(info.value) is False
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert repr(transport) == "<Transport [origins: 1, active: 0, idle: 0]>"


async def test_dns_failure_is_a_connect_error(transport: Transport) -> None:
    with pytest.raises(httpx.ConnectError) as info:
        await transport.handle_async_request(get("http://no-such-host.invalid"))
    assert request_sent(info.value) is False


async def test_read_timeout_waiting_for_the_head(raw_server: Any, transport: Transport) -> None:
    async def silent(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read()

    server = await raw_server(silent)
    timeout = {**FAST, "read": 0.2}
    with pytest.raises(httpx.ReadTimeout) as info:
        await transport.handle_async_request(get(server.url, extensions={"timeout": timeout}))
    assert request_sent(info.value) is True
    await eventually(lambda: server.closed == 1)  # the connection was dropped, not pooled


async def test_the_read_timeout_counts_from_each_request_on_a_reused_connection(
    raw_server: Any, transport: Transport
) -> None:
    delays = [0.1, 0.1, 0.1, 0.1, 0.5]  # each answer within 0.3 s but the last; all 0.9 s

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while delays:
            await server.read_request(reader)
            await asyncio.sleep(delays.pop(0))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await reader.read()

    server = await raw_server(handler)
    timeout = {**FAST, "read": 0.3}
    for _ in range(4):
        response = await transport.handle_async_request(
            get(server.url, extensions={"timeout": timeout})
        )
        assert await read_all(response) == b"ok"
    with pytest.raises(httpx.ReadTimeout):
        await transport.handle_async_request(get(server.url, extensions={"timeout": timeout}))
    assert server.accepts == 1


async def test_send_raw_without_httpx_objects(start_server: StartServer) -> None:
    from lb.transport import Timeouts, origin_of

    server = start_server(echo_app)
    transport = Transport()
    try:
        response = await transport.send_raw(
            origin_of(server.url),
            b"POST",
            b"/x/../y?q=1",
            [(b"Host", b"example"), (b"Content-Length", b"4")],
            b"body",
            Timeouts.of(FAST),
        )
        assert response.status == 200 and isinstance(response.headers, list)
        echoed = json.loads(b"".join([chunk async for chunk in response]))
        assert echoed["raw_path"] == "/x/../y" and echoed["body"] == "body"
        await response.aclose()
        with pytest.raises(httpx.ConnectError) as info:
            await transport.send_raw((b"http", b"127.0.0.1", free_port()), b"GET", b"/", [], b"")
        assert request_sent(info.value) is False and info.value._request is None
    finally:
        await transport.aclose()


async def test_read_timeout_mid_body(raw_server: Any, transport: Transport) -> None:
    server = await start_scripted(raw_server, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
    timeout = {**FAST, "read": 0.2}
    response = await transport.handle_async_request(
        get(server.url, extensions={"timeout": timeout})
    )
    with pytest.raises(httpx.ReadTimeout):
        await read_all(response)
    await eventually(lambda: server.closed == 1)


async def test_pool_timeout_then_fifo_hand_over(raw_server: Any) -> None:
    release = asyncio.Event()

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            await release.wait()
            release.clear()
            writer.write(b"hello")

    server = await raw_server(handler)
    transport = Transport(max_connections_per_origin=1)
    try:
        first = await transport.handle_async_request(get(server.url))
        quick = {**FAST, "pool": 0.1}
        with pytest.raises(httpx.PoolTimeout) as info:
            await transport.handle_async_request(get(server.url, extensions={"timeout": quick}))
        assert request_sent(info.value) is False

        second = asyncio.create_task(transport.handle_async_request(get(server.url)))
        await eventually(lambda: next(iter(transport._pools.values())).queued == 1)
        release.set()
        assert await read_all(first) == b"hello"
        response = await second
        await eventually(lambda: len(server.requests) == 2)
        release.set()
        assert await read_all(response) == b"hello"
        assert server.accepts == 1
    finally:
        await transport.aclose()


async def test_malformed_response(raw_server: Any, transport: Transport) -> None:
    server = await start_scripted(raw_server, b"HTTP/1.1 abc nonsense\r\n\r\n")
    with pytest.raises(httpx.RemoteProtocolError) as info:
        await transport.handle_async_request(get(server.url))
    assert isinstance(info.value.__cause__, httptools.HttpParserError)
    assert request_sent(info.value) is True


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nonly\r\n",
    ],
)
async def test_backend_closing_mid_body_raises_while_iterating(
    raw_server: Any, transport: Transport, partial: bytes
) -> None:
    server = await start_scripted(raw_server, partial, then_close=True)
    response = await transport.handle_async_request(get(server.url))
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async for chunk in response.aiter_raw():
            received += chunk
    assert received in (b"only this", b"only")
    await response.aclose()
    assert "active: 0, idle: 0" in repr(transport)


async def test_closed_before_the_head_on_a_new_connection(
    raw_server: Any, transport: Transport
) -> None:
    async def rude(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")

    server = await raw_server(rude)
    with pytest.raises(httpx.RemoteProtocolError) as info:
        await transport.handle_async_request(get(server.url))
    assert request_sent(info.value) is True
    assert server.accepts == 1  # a new connection is not retried


async def test_early_aclose_closes_the_connection(raw_server: Any, transport: Transport) -> None:
    server = await start_scripted(
        raw_server, b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 1000
    )
    response = await transport.handle_async_request(get(server.url))
    assert "active: 1" in repr(transport)
    assert await response.aiter_raw().__anext__() == b"x" * 1000
    await response.aclose()
    await eventually(lambda: server.closed == 1)
    assert repr(transport) == "<Transport [origins: 1, active: 0, idle: 0]>"


async def test_cancelled_request_does_not_leak_its_connection(
    raw_server: Any, transport: Transport
) -> None:
    async def silent(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        await reader.read()

    server = await raw_server(silent)
    task = asyncio.create_task(transport.handle_async_request(get(server.url)))
    await eventually(lambda: server.requests)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: server.closed == 1)
    assert "active: 0, idle: 0" in repr(transport)


async def test_header_injection_is_refused(transport: Transport) -> None:
    request = get("http://127.0.0.1:1", headers={"x-evil": "a\r\nInjected: yes"})
    with pytest.raises(httpx.LocalProtocolError) as info:
        await transport.handle_async_request(request)
    assert request_sent(info.value) is False


async def test_aclose_fails_waiters_and_refuses_new_requests(raw_server: Any) -> None:
    async def slow(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        await reader.read()

    server = await raw_server(slow)
    transport = Transport(max_connections_per_origin=1)
    first = asyncio.create_task(transport.handle_async_request(get(server.url)))
    await eventually(lambda: server.requests)
    second = asyncio.create_task(transport.handle_async_request(get(server.url)))
    await eventually(lambda: next(iter(transport._pools.values())).queued == 1)
    await transport.aclose()
    with pytest.raises(httpx.ReadError):
        await first
    with pytest.raises(httpx.ConnectError) as info:
        await second
    assert request_sent(info.value) is False
    with pytest.raises(httpx.ConnectError):
        await transport.handle_async_request(get(server.url))
    await eventually(lambda: server.closed == 1)


def test_repr_of_a_fresh_transport() -> None:
    assert repr(Transport()) == "<Transport [origins: 0, active: 0, idle: 0]>"


async def test_write_timeout_when_the_backend_stops_reading(
    raw_server: Any, transport: Transport
) -> None:
    async def deaf(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await server_done.wait()

    server_done = asyncio.Event()
    server = await raw_server(deaf)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536

    timeout = {**FAST, "write": 0.2}
    request = httpx.Request("PUT", server.url, content=endless(), extensions={"timeout": timeout})
    try:
        with pytest.raises(httpx.WriteTimeout) as info:
            await transport.handle_async_request(request)
        assert request_sent(info.value) is True
        assert "active: 0, idle: 0" in repr(transport)
    finally:
        server_done.set()


async def test_failing_request_stream_propagates_its_own_error(
    raw_server: Any, transport: Transport
) -> None:
    class ClientGone(Exception):
        pass

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read()

    server = await raw_server(handler)

    async def broken() -> AsyncIterator[bytes]:
        yield b"first"
        yield b"second"
        raise ClientGone

    request = httpx.Request("POST", server.url, content=broken(), extensions={"timeout": FAST})
    with pytest.raises(ClientGone):
        await transport.handle_async_request(request)
    await eventually(lambda: server.closed == 1)
    assert "active: 0, idle: 0" in repr(transport)


async def test_many_requests_share_a_small_pool(raw_server: Any) -> None:
    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await server.read_request(reader)
            writer.write(OK)

    server = await raw_server(handler)
    transport = Transport(max_connections_per_origin=5)
    try:

        async def one() -> bytes:
            return await read_all(await transport.handle_async_request(get(server.url)))

        assert await asyncio.gather(*(one() for _ in range(200))) == [b"ok"] * 200
        assert server.accepts <= 5
        assert repr(transport) == f"<Transport [origins: 1, active: 0, idle: {server.accepts}]>"
    finally:
        await transport.aclose()


def test_core_paths_under_uvloop() -> None:
    """The balancer runs on uvloop (uvicorn's default): its transports differ in details."""
    import uvloop

    async def scenario() -> None:
        async def handler(
            server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            head, body = await server.read_request(reader)
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
                head, body = await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
            await reader.readuntil(b"\r\n\r\n")  # then drop it: a stale keep-alive connection

        server = await RawServer(handler).start()
        transport = Transport()
        try:
            head = httpx.Request("HEAD", server.url, extensions={"timeout": FAST})
            assert await read_all(await transport.handle_async_request(head)) == b""

            async def upload() -> AsyncIterator[bytes]:
                for _ in range(64):
                    yield b"y" * 65536

            request = httpx.Request("POST", server.url, content=upload())
            response = await transport.handle_async_request(request)
            assert await read_all(response) == b"y" * 64 * 65536
            assert server.accepts == 1
            # The next request meets the stale connection and is retried on a new one.
            assert await read_all(await transport.handle_async_request(get(server.url))) == b""
            assert server.accepts == 2
        finally:
            await transport.aclose()
            await server.stop()

    uvloop.run(scenario())


@pytest.mark.parametrize(
    ("parts", "length"),
    [([b"whole"], 5), ([b"part", b"s"], 5), ([b"no", b"length"], None)],
)
async def test_request_stream_is_read_to_its_end(
    raw_server: Any, transport: Transport, parts: list[bytes], length: int | None
) -> None:
    """As with httpcore: a caller may hook the end of its stream (lb's proxy starts its
    disconnect watcher there), so the stream is never left suspended after its last chunk."""
    ended = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for part in parts:
                yield part
            ended.append(True)

    async def echo(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            head, body = await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))

    server = await raw_server(echo)
    headers = {} if length is None else {"content-length": str(length)}
    request = httpx.Request("POST", server.url, headers=headers, stream=Body())
    response = await transport.handle_async_request(request)
    assert await read_all(response) == b"".join(parts)
    assert ended == [True]
    assert "idle: 1" in repr(transport)


async def test_request_stream_longer_than_its_content_length(
    raw_server: Any, transport: Transport
) -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"12345"
        yield b"6"

    server = await start_scripted(raw_server, OK)
    stream = httpx.Request("POST", server.url, content=parts()).stream
    request = httpx.Request("POST", server.url, headers={"content-length": "5"}, stream=stream)
    with pytest.raises(httpx.LocalProtocolError) as info:
        await transport.handle_async_request(request)
    assert request_sent(info.value) is False
    assert server.accepts == 0
