"""The floor of a Python HTTP/1.1 proxy on this machine: a yardstick for the shared bench, not lb.

    LB_HOST=127.0.0.1 LB_PORT=8080 LB_BACKENDS=http://127.0.0.1:9001,... python bench/floor_proxy.py

What every proxy of HTTP/1.1 must do per request, and nothing else: parse the client's request
head (httptools), pick a backend round robin, write the request on an idle keep-alive connection
to it, parse the response (httptools), and write it back in one write. No ASGI, no tasks or
coroutines (callbacks only, on uvloop), no timeouts, no retries, no health, no header rules beyond
dropping hop-by-hop fields, no request bodies, no pipelining, no error handling worth the name. lb
does all of those; what this one costs per request is what lb's own work is measured against
(docs/performance.md, "The targets").
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from urllib.parse import urlsplit

import httptools
import uvloop

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
     b"upgrade"}
)  # fmt: skip


class Upstream(asyncio.Protocol):
    """One keep-alive connection to a backend; answers one client request at a time."""

    def __init__(self, idle: deque[Upstream]) -> None:
        self.idle = idle
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.headers: list[bytes] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport  # uvloop's transports do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.idle:
            self.idle.remove(self)
        if self.client is not None:
            self.client.transport.close()

    def send(self, client: Client, request: bytes) -> None:
        self.client = client
        self.headers = []
        self.body = []
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower not in HOP_BY_HOP and lower != b"content-length":  # written anew below
            self.headers += (name, b": ", value, b"\r\n")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        body = b"".join(self.body)
        status = self.parser.get_status_code()
        head = b"HTTP/1.1 %d \r\n%bcontent-length: %d\r\n\r\n" % (
            status,
            b"".join(self.headers),
            len(body),
        )
        self.idle.append(self)
        if client is not None:
            client.transport.write(head + body)


class Client(asyncio.Protocol):
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.url = b""
        self.headers: list[bytes] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in HOP_BY_HOP:
            self.headers += (name, b": ", value, b"\r\n")

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        request = b"%b %b HTTP/1.1\r\n%b\r\n" % (method, self.url, b"".join(self.headers))
        self.proxy.forward(self, request)


class Proxy:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.idle = [deque[Upstream]() for _ in backends]
        self.next = 0

    def forward(self, client: Client, request: bytes) -> None:
        index = self.next
        self.next = (index + 1) % len(self.backends)
        idle = self.idle[index]
        if idle:
            idle.pop().send(client, request)
            return
        host, port = self.backends[index]
        loop = asyncio.get_running_loop()
        connecting = loop.create_connection(lambda: Upstream(idle), host, port)
        task = loop.create_task(connecting)
        task.add_done_callback(lambda done: done.result()[1].send(client, request))


async def main() -> None:
    backends = []
    for url in os.environ["LB_BACKENDS"].split(","):
        parts = urlsplit(url)
        backends.append((parts.hostname or "127.0.0.1", parts.port or 80))
    proxy = Proxy(backends)
    loop = asyncio.get_running_loop()
    host, port = os.environ.get("LB_HOST", "127.0.0.1"), int(os.environ["LB_PORT"])
    server = await loop.create_server(lambda: Client(proxy), host, port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
