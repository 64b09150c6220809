"""Backend ASGI apps the tests put behind the balancer. Each records what it saw."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode


class Backend:
    """A configurable test backend: `name` shows up in every answer, `seen` records requests."""

    def __init__(self, name: str = "b") -> None:
        self.name = name
        self.seen: list[dict[str, Any]] = []
        self.health_status = 200
        self.health_checks: list[float] = []  # when each /health request came (monotonic)
        self.status = 200
        self.delay = 0.0
        self.lock = threading.Lock()
        # Set from tests (thread-safe) to release a streaming response's second part.
        self.release = threading.Event()
        self.cancelled = threading.Event()
        self.in_flight = 0
        # /cache/...: headers to answer with instead of the query's h= values, per path.
        self.cache_headers: dict[str, list[tuple[str, str]]] = {}

    def seen_headers(self, path: str) -> list[dict[str, str]]:
        """The headers of each request this backend saw for `path`."""
        with self.lock:
            return [dict(r["headers"]) for r in self.seen if r["path"] == path]

    def checks_since(self, since: float) -> int:
        """How many /health requests came at or after `since` (time.monotonic())."""
        with self.lock:
            return sum(1 for at in self.health_checks if at >= since)

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.seen if path is None or r["path"] == path)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            return await self.websocket(scope, receive, send)
        path = scope["path"]
        query = parse_qs(scope["query_string"].decode())
        if path == "/health":
            with self.lock:
                self.health_checks.append(time.monotonic())
            return await self.reply(send, self.health_status, b"ok")
        record = {
            "method": scope["method"],
            "path": path,
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
        }
        with self.lock:
            self.seen.append(record)
        self.in_flight += 1
        try:
            return await self.handle(scope, receive, send, path, query, record)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.in_flight -= 1

    async def handle(
        self,
        scope: Any,
        receive: Any,
        send: Any,
        path: str,
        query: dict[str, list[str]],
        record: Any,
    ) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if path == "/upload":
            total = 0
            while True:
                message = await receive()
                total += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
            return await self.reply(send, 200, json.dumps({"received": total}).encode())
        if path == "/big":
            size = int(query["size"][0])
            chunk = b"x" * 65536
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", str(size).encode())],
                }
            )
            sent = 0
            while sent < size:
                part = chunk[: min(len(chunk), size - sent)]
                sent += len(part)
                await send({"type": "http.response.body", "body": part, "more_body": sent < size})
            return None
        if path == "/sse":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send(
                {"type": "http.response.body", "body": b"data: first\n\n", "more_body": True}
            )
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            await send(
                {"type": "http.response.body", "body": b"data: second\n\n", "more_body": False}
            )
            return None
        if path == "/hang":
            # uvicorn does not cancel an app whose client left; it reports it through receive().
            async def wait_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass

            disconnect = asyncio.ensure_future(wait_disconnect())
            while not self.release.is_set():
                if disconnect.done():
                    self.cancelled.set()
                    return None
                await asyncio.sleep(0.01)
            disconnect.cancel()
            return await self.reply(send, 200, b"late")
        if path == "/gzip":
            body = gzip.compress(b"hello gzip " * 100, mtime=0)
            return await self.reply(
                send, 200, body, [(b"content-encoding", b"gzip"), (b"content-type", b"text/plain")]
            )
        if path == "/cookies":
            return await self.reply(
                send,
                200,
                b"cookies",
                [
                    (b"set-cookie", b"a=1; Path=/"),
                    (b"set-cookie", b"b=2; Path=/"),
                    (b"server", b"backend-server"),
                    (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
                ],
            )
        if path == "/hop":
            return await self.reply(
                send,
                200,
                b"hop",
                [
                    (b"connection", b"x-private"),
                    (b"x-private", b"secret"),
                    (b"keep-alive", b"timeout=5"),
                    (b"x-request-id", b"backend-id"),
                ],
            )
        if path.startswith("/cache/"):
            return await self.cacheable(scope, send, path, query)
        if path.startswith("/status/"):
            return await self.reply(send, int(path.rsplit("/", 1)[1]), b"status")
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        record["body"] = body.decode("latin-1")
        payload = {"backend": self.name, **record}
        return await self.reply(
            send,
            self.status,
            json.dumps(payload).encode(),
            [(b"content-type", b"application/json")],
        )

    async def cacheable(
        self, scope: Any, send: Any, path: str, query: dict[str, list[str]]
    ) -> None:
        """`/cache/...`: answers with the headers given as `h=Name:Value` (or set per path in
        `cache_headers`), 304 when the request's If-None-Match / If-Modified-Since match them.

        Query: `status=` (default 200; a `.status` >= 500 on the backend wins), `size=N` (body of
        N bytes instead of JSON), `chunked=1` (no Content-Length), `delay=S`, `echo=NAME` (the
        request's NAME header in the JSON body). The JSON body carries `n`, how many requests
        this backend saw for the path.
        """
        if self.status >= 500:
            return await self.reply(send, self.status, b"backend failure")
        delay = float(query.get("delay", ["0"])[0])
        if delay:
            await asyncio.sleep(delay)
        wanted = self.cache_headers.get(path)
        if wanted is None:
            wanted = [tuple(h.split(":", 1)) for h in query.get("h", [])]  # type: ignore[misc]
        headers = [(k.strip().lower().encode(), v.strip().encode()) for k, v in wanted]
        request = {k: v for k, v in scope["headers"]}
        given = dict(headers)
        inm = request.get(b"if-none-match")
        etag = given.get(b"etag")
        ims = request.get(b"if-modified-since")
        last_modified = given.get(b"last-modified")
        if (
            inm is not None
            and etag is not None
            and etag.removeprefix(b"W/") in [t.strip().removeprefix(b"W/") for t in inm.split(b",")]
        ) or (
            inm is None
            and ims is not None
            and last_modified is not None
            and parsedate_to_datetime(last_modified.decode()) <= parsedate_to_datetime(ims.decode())
        ):
            out = headers + [(b"x-backend", self.name.encode())]
            await send({"type": "http.response.start", "status": 304, "headers": out})
            await send({"type": "http.response.body", "body": b""})
            return None
        status = int(query.get("status", ["200"])[0])
        if "size" in query:
            body = b"x" * int(query["size"][0])
        else:
            echo = {n: request.get(n.lower().encode(), b"").decode() for n in query.get("echo", [])}
            payload = {"backend": self.name, "path": path, "n": self.count(path), "echo": echo}
            body = json.dumps(payload).encode()
            headers.append((b"content-type", b"application/json"))
        if scope["method"] == "HEAD":
            # The GET's Content-Length, without its body (RFC 9110 §9.3.2).
            out = [(b"content-length", str(len(body)).encode()), (b"x-backend", self.name.encode())]
            await send({"type": "http.response.start", "status": status, "headers": out + headers})
            await send({"type": "http.response.body", "body": b""})
            return None
        if "chunked" in query:
            headers.append((b"x-backend", self.name.encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            half = len(body) // 2
            await send({"type": "http.response.body", "body": body[:half], "more_body": True})
            await send({"type": "http.response.body", "body": body[half:]})
            return None
        return await self.reply(send, status, body, headers)

    async def reply(
        self, send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        out = [(b"content-length", str(len(body)).encode()), (b"x-backend", self.name.encode())]
        await send(
            {"type": "http.response.start", "status": status, "headers": out + (headers or [])}
        )
        await send({"type": "http.response.body", "body": body})

    async def websocket(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        protocols = scope.get("subprotocols") or []
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if protocols:
            accept["subprotocol"] = protocols[0]
        await send(accept)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is not None and text.startswith("close:"):
                await send(
                    {"type": "websocket.close", "code": int(text.split(":")[1]), "reason": "bye"}
                )
                return
            if text is not None:
                await send({"type": "websocket.send", "text": f"{self.name}:{text}"})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


def cache_url(path: str, *headers: str, **query: str) -> str:
    """`/cache/<path>?h=...`: the Backend's cacheable endpoint answering with these headers."""
    return f"/cache/{path}?" + urlencode([("h", h) for h in headers] + list(query.items()))
