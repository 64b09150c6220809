"""Request body limits (`server.max_body_bytes`, a route's `max_body_bytes`): 413
`payload_too_large`, with nothing sent to a backend when Content-Length already says so, and a
chunked body cut (its upstream request aborted, never completed) once it grows past the limit."""

from __future__ import annotations

from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.proxy.downstream import BodyTooLarge
from lb.proxy.errors import send_error
from lb.types import Handler, Message, Receive, Scope, Send


class BodyLimit:
    """Pure ASGI in front of a route's chain. A request with a Content-Length needs no watching
    beyond the header (the server holds the body to its length); only a chunked one has its
    `receive` counted."""

    __slots__ = ("app", "limit")

    def __init__(self, app: Handler, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __repr__(self) -> str:
        return f"<BodyLimit {self.limit} bytes -> {self.app!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx: RequestContext = scope[SCOPE_KEY]
        limit = self.limit
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                # The server checked that it is a number and holds the body to it.
                if value.isdigit() and int(value) > limit:
                    return await _refuse(send, ctx, limit)
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked:
            await self.app(scope, receive, send)
            return

        received = 0
        over = False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised into whoever reads the body (the upstream transport), which
                    # aborts its request: the backend never sees a complete one.
                    over = True
                    ctx.error = "payload_too_large"
                    raise BodyTooLarge(f"request body over {limit} bytes")
            return message

        await self.app(scope, counted, send)
        if over and ctx.status == 0:
            await _refuse(send, ctx, limit)


async def _refuse(send: Send, ctx: RequestContext, limit: int) -> None:
    await send_error(
        send, ctx, "payload_too_large", f"the request body is larger than {limit} bytes"
    )
