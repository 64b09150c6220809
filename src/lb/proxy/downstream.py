"""The client side of a proxied request: its body as a stream, and hearing that it went away.

`RequestBody` reads the body from ASGI `receive` as the transport asks for it, keeping a small one
so a retry can send it again. `watch_client` returns the cheapest watcher the server allows for
cancelling the request's task when the client leaves (so the upstream request stops too): under
lb's own protocol a callback from its connection_lost (`lb.types.DISCONNECT_EXTENSION`), under
any other server a task listening on `receive` once the body is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import httpx

from lb.exceptions import LBError
from lb.types import (
    DISCONNECT_EXTENSION,
    RESPONDER_EXTENSION,
    Message,
    Receive,
    Responder,
    Scope,
    Send,
)

REPLAY_LIMIT = 64 * 1024  # request body bytes kept so that a retry can send them again


class Watcher(Protocol):
    """Cancels the request's task if the client leaves between `start` and `stop`."""

    @property
    def disconnected(self) -> bool:
        """The client left, and the request's task was cancelled for it."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def responder_for(scope: Scope, send: Send) -> Responder | None:
    """lb's server's responder when `send` is its own (no layer wraps it), else None."""
    extensions = scope.get("extensions")
    responder: Responder | None = extensions.get(RESPONDER_EXTENSION) if extensions else None
    owner: object = getattr(send, "__self__", None)
    return responder if responder is not None and owner is responder else None


def watch_client(scope: Scope, receive: Receive, send: Send) -> tuple[Watcher, Any]:
    """A watcher for the current task, and the `send` to use with it."""
    extensions = scope.get("extensions")
    register = extensions.get(DISCONNECT_EXTENSION) if extensions else None
    if register is not None:
        return CallbackWatcher(register), send
    watcher = DisconnectWatcher(receive, send)
    return watcher, watcher.send


class CallbackWatcher:
    """Under lb's protocol: the connection calls back from connection_lost and cancels the
    request's task itself, no task or `current_task()` needed. It never fires once the response
    is complete, so `send` needs no wrapping."""

    __slots__ = ("_register", "disconnected")

    def __init__(self, register: Callable[[Callable[[], None] | None], None]) -> None:
        self._register = register
        self.disconnected = False

    def start(self) -> None:
        self._register(self._lost)

    def stop(self) -> None:
        self._register(None)

    def _lost(self) -> None:
        self.disconnected = True


class ClientDisconnected(LBError):
    """The client went away (http.disconnect) while the request was under way."""


class BodyTooLarge(ClientDisconnected):
    """The client sent more body than the route allows (`lb.proxy.bodylimit`). Like a
    disconnect, it ends the request where it is, and it is no failure of the backend's."""


class RequestBody(httpx.AsyncByteStream):
    """The client's request body as an httpx stream, read from ASGI `receive` as it arrives.

    What is read is kept while it is no more than `REPLAY_LIMIT` bytes (or one chunk), so that a
    retry can send it again: a body that small, or any body of which a transport took only the
    first chunk before failing to connect. Past that the body streams on without being kept and
    cannot be sent again.
    """

    def __init__(self, receive: Receive, expected: bool, on_done: Any) -> None:
        self._receive = receive
        self.expected = expected
        self.started = False  # some of it was read from the client
        self._kept: list[bytes] | None = []  # None: over REPLAY_LIMIT, cannot be sent again
        self._kept_bytes = 0
        self._more = expected  # the client has more to send
        self.received = 0  # body bytes read from the client
        self._on_done = on_done

    @property
    def replayable(self) -> bool:
        """Whether all of the body read so far can be sent again."""
        return self._kept is not None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if not self.expected:
            return
        if self._kept is None:
            raise RuntimeError("the request body was streamed and cannot be sent again")
        for chunk in tuple(self._kept):
            yield chunk
        self.started = True
        receive = self._receive
        while self._more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            body = message.get("body", b"")
            self._more = message.get("more_body", False)
            if body:
                self.received += len(body)
                if self._kept is not None:
                    # Kept before it is handed on: the transport may fail to send it.
                    self._kept_bytes += len(body)
                    if self._kept_bytes <= REPLAY_LIMIT or not self._kept:
                        self._kept.append(body)
                    else:
                        self._kept = None
                yield body
            if not self._more:
                self._on_done()


class DisconnectWatcher:
    """Cancels the request's task when the client goes away, so the upstream request stops too.

    It may listen on `receive` only once the body has been read (the body reader owns it before).
    """

    __slots__ = ("_receive", "_send", "_task", "_watch", "disconnected")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._task = asyncio.current_task()
        self._watch: asyncio.Task[None] | None = None
        self.disconnected = False

    def start(self) -> None:
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        message = await self._receive()
        while message["type"] == "http.request":  # an unread (empty) body comes first
            message = await self._receive()
        if message["type"] == "http.disconnect" and self._task is not None:
            self.disconnected = True
            self._task.cancel()

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()

    async def send(self, message: Message) -> None:
        """`send`, standing down once the response is whole: the server reports a disconnect to
        every `receive` after that, which must not cancel the request's clean-up (closing the
        upstream response) nor count a delivered response as failed."""
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.stop()
        await self._send(message)


def has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False
