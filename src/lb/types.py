"""The types every layer of lb speaks: ASGI's (`Scope`, `Receive`, `Send`, `ASGIApp`), the
`Handler` of one step of a route's pipeline, and the `Service` a runtime starts and stops.

A leaf module: it imports nothing of lb, so any layer may use it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Scope extensions lb's own protocol (`lb.server`, `lb.cycle`) offers the app: a function to
# register a callback run when the client disconnects, and one to send an interim (1xx) response.
DISCONNECT_EXTENSION = "lb.disconnect"
INTERIM_EXTENSION = "lb.interim"
# And the request's cycle itself, a `Responder`: a layer handed the server's own `send` (no layer
# between wraps it: `send.__self__` is the responder) may send a whole response with one call, or
# have the response's headers rewritten without wrapping `send`.
RESPONDER_EXTENSION = "lb.responder"

HeaderList = list[tuple[bytes, bytes]]


class Responder(Protocol):
    def on_head(self, hook: Callable[[HeaderList], HeaderList]) -> None:
        """Rewrite the response's headers with `hook`, as a `send` wrapper put around the
        server's own `send` now would (hooks of inner layers run first)."""
        ...

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Send the whole response, as `http.response.start` and one final
        `http.response.body` would; False, with nothing sent, when it must go through ASGI."""
        ...


class Handler(Protocol):
    """One step of a route's pipeline (rate limit, cache, proxy): an ASGI callable."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class Service(Protocol):
    """A background part of the app (health checker, watcher, ...) started and stopped with it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
