"""A route's `redirect` (SPEC 12): answered by lb, without a pool or a backend."""

from __future__ import annotations

import re

from lb.config.model import RedirectConfig
from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.proxy.errors import send_error, send_redirect
from lb.proxy.rewrite import Filled, host_of
from lb.types import Receive, Scope, Send

# What `{host}` may be in a Location: a name or an IP literal. Anything else in a client's Host
# (`evil.example/x`, `a@b`) would let it choose where the redirect goes.
_HOST = re.compile(rb"[a-z0-9_][a-z0-9._-]*|\[[0-9a-f:.]+\]")


class Redirect:
    """The whole pipeline of a redirect route below its client filter and rate limit."""

    __slots__ = ("to", "status", "needs_host")

    def __init__(self, config: RedirectConfig) -> None:
        self.to = Filled(config.to)
        self.status = config.status
        self.needs_host = "host" in config.to.parts[1::2]

    def __repr__(self) -> str:
        return f"<Redirect {self.status}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[SCOPE_KEY]
        kind = "http"
        if scope["type"] == "websocket":
            if "websocket.http.response" not in scope.get("extensions", {}):
                ctx.status = self.status
                await send({"type": "websocket.close", "code": 1008})
                return
            kind = "websocket.http"
        if self.needs_host and _HOST.fullmatch(host_of(ctx, scope)) is None:
            await send_error(send, ctx, "bad_request", "a redirect needs a valid Host", kind=kind)
            return
        await send_redirect(send, ctx, self.status, self.to.fill(ctx, scope), kind)
