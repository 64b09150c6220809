"""`Cycle`: the request/response cycle lb's HTTP protocol (`lb.server`) runs each request on.

It behaves as uvicorn's httptools `RequestResponseCycle`, with two changes for the hot path, and
two for what a proxy relays:

* **One write per small response.** uvicorn writes the response head as soon as the app sends
  `http.response.start` and the body in a second write: two syscalls, and on loopback two
  segments, per response. `Cycle` holds the head back and writes it with the first body message.
  A head is never held past the current turn of the event loop, so a streamed response whose
  first body part is slow (SSE, long polls) still sends its head at once; and it is written
  before uvicorn closes the connection on an app error, as uvicorn would have.
* **Cancelling on disconnect.** The scope carries the extension `DISCONNECT_EXTENSION`, a function
  with which the app registers a callback (or None to withdraw it). While one is registered, a
  client connection lost (or whose framing breaks) before the response is complete calls it once
  and cancels the request's task. The proxy uses it instead of a watcher task per request
  listening on `receive`.
* **A whole response in one call.** The scope carries the cycle itself as `RESPONDER_EXTENSION`
  (`lb.types.Responder`): a layer handed the cycle's own `send` may answer with `respond`
  (head and whole body, no message dicts) and rewrite the head with `on_head` instead of
  wrapping `send`. The proxy and the rate limit do; under any other server they use ASGI.
* **Interim responses.** The scope carries `INTERIM_EXTENSION`, a function `(status, headers)`
  that writes a 1xx response (103 Early Hints) at once, before the final one, to an HTTP/1.1
  client. ASGI has no message for it; the proxy hands it to the transport.
* **Bodiless 204 and 304.** Like a response to HEAD, they end at their head whatever their
  Content-Length says (RFC 9110 8.6: a 304 may carry the length of the 200), where uvicorn
  would wait for that many body bytes and fail the response.

Everything else (validation, Content-Length accounting, chunked framing, HEAD, 100 Continue for
Expect: 100-continue, keep-alive, flow control, the error paths) behaves as uvicorn's httptools
cycle does; the code is lb's own (`lb.httpwire` holds the wire pieces), so no uvicorn release can
change it under lb.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

from lb.httpwire import BAD_NAME, BAD_VALUE, STATUS_LINE, FlowControl
from lb.proxy.headers import HOP_BY_HOP
from lb.types import (
    DISCONNECT_EXTENSION,
    INTERIM_EXTENSION,
    RESPONDER_EXTENSION,
    ASGIApp,
    Message,
    Scope,
)

COALESCE_LIMIT = 64 * 1024  # a body part this small is copied into one write with the head

Callback = Callable[[], None]


def _nothing() -> None:
    pass


class Cycle:
    # Positional parameters, passed on positionally: keyword arguments to a class call cost
    # more than the rest of setting up the cycle.
    def __init__(
        self,
        scope: Scope,
        transport: asyncio.Transport,
        flow: FlowControl,
        logger: logging.Logger,
        access_logger: logging.Logger,
        access_log: bool,
        default_headers: list[tuple[bytes, bytes]],
        expect_100_continue: bool,
        keep_alive: bool,
        on_response: Callable[..., None],
        loop: asyncio.AbstractEventLoop,
        interim: Callable[[int, list[tuple[bytes, bytes]]], None] | None = None,
    ) -> None:
        self.scope = scope
        self.transport = transport
        self.flow = flow
        self.logger = logger
        self.access_logger = access_logger
        self.access_log = access_log
        self.default_headers = default_headers
        # `receive`'s wake-up (what an asyncio.Event would be, made only when waited on: a
        # bodiless request, most of them, never waits).
        self.message_ready = False
        self._waiter: asyncio.Future[None] | None = None
        self.on_response = on_response
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.body = bytearray()  # the request body received and not yet taken by `receive`
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: bool | None = None
        self.expected_content_length = 0
        self.loop = loop
        self.head: bytes | None = None  # the response head, not written yet
        self.on_disconnect: Callback | None = None
        self.head_hook: Callable[[list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]] | None = (
            None
        )
        self.task: asyncio.Task[None] | None = None  # set by the protocol that starts it
        extensions: dict[str, Any] = scope.setdefault("extensions", {})
        extensions[DISCONNECT_EXTENSION] = self.watch_disconnect
        # The protocol passes one function per connection that calls the current cycle's
        # send_interim: no bound method made per request for what few requests use.
        extensions[INTERIM_EXTENSION] = self.send_interim if interim is None else interim
        extensions[RESPONDER_EXTENSION] = self

    def on_head(
        self, hook: Callable[[list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]]
    ) -> None:
        """See `lb.types.Responder`."""
        outer = self.head_hook
        self.head_hook = hook if outer is None else lambda headers: outer(hook(headers))

    def watch_disconnect(self, callback: Callback | None) -> None:
        """Call `callback` and cancel the request's task if the client goes away before the
        response is complete."""
        self.on_disconnect = callback

    def send_interim(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Write an interim (1xx) response now: only before the final response starts, and
        only to an HTTP/1.1 client (RFC 9110 15.2: never to HTTP/1.0). Hop-by-hop headers are
        left out, as from any response."""
        if (
            self.response_started
            or self.disconnected
            or self.scope["http_version"] != "1.1"
            or self.transport.is_closing()
        ):
            return
        content = [STATUS_LINE[status]]
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                content += (name, b": ", value, b"\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))

    def wake(self) -> None:
        """Something for `receive`: a body part, the body's end, a disconnect, the response's
        end."""
        self.message_ready = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # cancelled with its request
                waiter.set_result(None)

    def lost(self) -> None:
        """The client connection is gone (or unusable) with the response incomplete."""
        self.disconnected = True
        self.wake()
        callback = self.on_disconnect
        if callback is not None:
            self.on_disconnect = None
            callback()
            if self.task is not None:
                self.task.cancel()

    async def run_asgi(self, app: ASGIApp) -> None:
        """Run the app on this request. A head still held back is written before the failure
        handling, which closes the connection when the app failed after the head: the client
        gets the head first, as it would have without holding it back."""
        try:
            result: object = await app(self.scope, self.receive, self.send)  # type: ignore[func-returns-value]
        except BaseException as exc:
            self.write_head()
            self.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.transport.close()
        else:
            self.write_head()
            if result is not None:
                msg = "ASGI callable should return None, but returned '%s'."
                self.logger.error(msg, result)
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                self.logger.error("ASGI callable returned without starting response.")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                self.logger.error("ASGI callable returned without completing response.")
                self.transport.close()
        finally:
            self.on_response = _nothing

    def write_head(self) -> None:
        head = self.head
        if head is not None:
            self.head = None
            if not self.transport.is_closing():
                self.transport.write(head)

    async def send_500_response(self) -> None:
        self.head_hook = None  # the server's own answer, no layer's
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"21"),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send(
            {"type": "http.response.body", "body": b"Internal Server Error", "more_body": False}
        )

    async def receive(self) -> Message:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            if not self.message_ready:
                waiter = self._waiter = self.loop.create_future()
                await waiter
            self.message_ready = False
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
        self.body = bytearray()
        return message

    async def send(self, message: Message) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()

        if self.disconnected:
            return

        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
                )
            self.response_started = True
            self.waiting_for_100_continue = False
            headers = message.get("headers", ())
            if self.head_hook is not None:
                headers = self.head_hook(list(headers))
            self.head = self.encode_head(message["status"], headers)
            self.loop.call_soon(self.write_head)

        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
                )
            self.write_body(message.get("body", b""), message.get("more_body", False))

        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent, after response already "
                "completed."
            )

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """The whole response at once, as `http.response.start` and one `http.response.body`
        would send it, without their message dicts, awaits and the call_soon that writes a
        held-back head. False (nothing done) when it cannot be sent at once: a response already
        started, a client gone or not reading; the caller then sends it through ASGI."""
        if self.response_started or self.disconnected or self.flow.write_paused:
            return False
        self.response_started = True
        self.waiting_for_100_continue = False
        if self.head_hook is not None:
            headers = self.head_hook(headers)
        self.head = self.encode_head(status, headers)
        self.write_body(body, False)
        return True

    def write_body(self, body: bytes, more_body: bool) -> None:
        """One body part (the head with it, when still held back)."""
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            data = b""
        elif self.chunked_encoding:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more_body:
                data += b"0\r\n\r\n"
        else:
            num_bytes = len(body)
            if num_bytes > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= num_bytes
            data = body

        head = self.head
        if head is None:
            if data:
                self.transport.write(data)
        else:
            self.head = None
            if len(data) <= COALESCE_LIMIT:
                self.transport.write(head + data)
            else:
                self.transport.writelines((head, data))

        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.wake()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def encode_head(self, status_code: int, headers: Any) -> bytes:
        """The status line and header section of `http.response.start`, as uvicorn makes them."""
        if self.default_headers:
            headers = self.default_headers + list(headers)

        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                _client(self.scope),
                self.scope["method"],
                _path_with_query(self.scope),
                self.scope["http_version"],
                status_code,
            )

        # A backend may send any three-digit code (the suite's 999 included); the table holds
        # 100-599 only, and an unknown code goes on with an empty reason phrase.
        line = STATUS_LINE.get(status_code)
        if line is None:
            line = b"HTTP/1.1 %d \r\n" % status_code
        content = [line]
        has_connection_close = False
        for name, value in headers:
            if not name.islower():  # lb's own headers are lower-case already: no copy
                name = name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
                if b"close" in connection:
                    self.keep_alive = False
                    has_connection_close = True
            content += (name, b": ", value, b"\r\n")
        # Both checks are of single bytes: they run over all names (all values) at once, through
        # a byte table.
        if 1 in b"".join(content[1::4]).translate(BAD_NAME):
            raise RuntimeError("Invalid HTTP header name.")
        if 1 in b"".join(content[3::4]).translate(BAD_VALUE):
            raise RuntimeError("Invalid HTTP header value.")

        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")

        if status_code == 204 or status_code == 304:
            # No body, whatever Content-Length says (RFC 9110 6.4.1): the response ends here.
            self.expected_content_length = 0
            self.chunked_encoding = False
        elif self.chunked_encoding is None and self.scope["method"] != "HEAD":
            # Neither content-length nor transfer-encoding specified
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")

        content.append(b"\r\n")
        return b"".join(content)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


def _path_with_query(scope: Scope) -> str:
    path = urllib.parse.quote(scope["path"])
    query: bytes = scope["query_string"]
    return f"{path}?{query.decode('ascii')}" if query else path
