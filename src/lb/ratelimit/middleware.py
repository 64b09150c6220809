"""The rate-limit layer: a pure-ASGI wrapper, outermost on a limited route, for HTTP and WebSocket.

It decides before anything else runs: a rejected request gets 429 with Retry-After and never has
its body read nor reaches a backend; an allowed one goes on, and its response head (or WebSocket
accept) gets the RateLimit-* headers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from lb.config import RateLimitConfig
from lb.metrics import Metrics
from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.proxy.downstream import responder_for
from lb.proxy.errors import refuse_websocket, send_error
from lb.ratelimit.gcra import Decision, rate_limit_headers
from lb.ratelimit.store import Store, StoreUnavailable
from lb.types import (
    Handler,
    Message,
    Receive,
    Scope,
    Send,
)

_OURS = frozenset({b"ratelimit-limit", b"ratelimit-remaining", b"ratelimit-reset"})
# Longer key values (header keys are the client's to choose) are stored as a digest, so a table
# of max_keys keys stays small whatever the clients send.
MAX_KEY_CHARS = 64
# Retry-After for a 503 when the store is away and on_store_error is deny.
UNAVAILABLE_RETRY_AFTER = 1

KeyOf = Callable[[Any, RequestContext], str]


def key_function(spec: str) -> KeyOf:
    """`client_ip` or `header:NAME` (NAME lower-case); a missing or empty header: the client IP."""
    if spec == "client_ip":

        def by_client_ip(scope: Scope, ctx: RequestContext) -> str:
            return ctx.client_ip

        return by_client_ip
    kind, _, name = spec.partition(":")
    if kind != "header" or not name:
        raise ValueError(f"unknown rate limit key {spec!r}")
    wanted = name.encode("latin-1")

    def by_header(scope: Scope, ctx: RequestContext) -> str:
        value: bytes
        for header, value in scope["headers"]:
            if header == wanted:
                if not value:
                    break
                if len(value) > MAX_KEY_CHARS:
                    return "h#" + hashlib.sha256(value).hexdigest()
                return "h:" + value.decode("latin-1")
        # Prefixed apart from header values, so no header value can name someone's IP bucket.
        return "ip:" + ctx.client_ip

    return by_header


class RateLimit:
    """Wraps `app` (the rest of a route's chain) with the limit kept in `store`."""

    def __init__(
        self, app: Handler, store: Store, config: RateLimitConfig, metrics: Metrics
    ) -> None:
        self.app = app
        self.store = store
        # An in-process store decides synchronously: no coroutine per request for it.
        self._decide_now: Callable[[str], Decision] | None = getattr(store, "decide_now", None)
        self.limit = store.limit
        self.key_of = key_function(config.key)
        self.deny_on_store_error = config.on_store_error == "deny"
        self.metrics = metrics
        self.detail = f"rate limit of {config.rate:g}/s with burst {config.burst} exceeded"

    def __repr__(self) -> str:
        return f"<RateLimit {self.store!r} -> {self.app!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[SCOPE_KEY]
        decide_now = self._decide_now
        try:
            if decide_now is not None:
                result = decide_now(self.key_of(scope, ctx))
            else:
                result = await self.store.decide(self.key_of(scope, ctx))
        except StoreUnavailable:
            self.metrics.store_error("ratelimit")
            if self.deny_on_store_error:
                await _reject(
                    scope,
                    receive,
                    send,
                    ctx,
                    "unavailable",
                    "rate limit store unavailable",
                    UNAVAILABLE_RETRY_AFTER,
                    None,
                )
            else:
                await self.app(scope, receive, send)
            return
        self.metrics.rate_limit(result.allowed)
        extra = rate_limit_headers(self.limit, result)
        if result.allowed:
            responder = responder_for(scope, send)
            if responder is not None:
                # lb's server adds them as it encodes the head: `send` stays unwrapped, and the
                # proxy can hand it a whole response in one call.
                responder.on_head(partial(_add_headers, extra))
                await self.app(scope, receive, send)
            else:
                await self.app(scope, receive, _with_headers(send, extra))
        else:
            await _reject(
                scope, receive, send, ctx, "rate_limited", self.detail, result.retry_after, extra
            )


def _add_headers(
    extra: list[tuple[bytes, bytes]], headers: Iterable[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    # The backend's own RateLimit-* headers would contradict ours: the balancer's limit is the
    # one the client is under here.
    kept = [h for h in headers if h[0].lower() not in _OURS]
    kept.extend(extra)
    return kept


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def send_with_headers(message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start" or kind == "websocket.accept":
            message["headers"] = _add_headers(extra, message.get("headers", ()))
        await send(message)

    return send_with_headers


async def _reject(
    scope: Scope,
    receive: Receive,
    send: Send,
    ctx: RequestContext,
    code: str,
    detail: str,
    retry_after: int,
    headers: list[tuple[bytes, bytes]] | None,
) -> None:
    if scope["type"] == "http":
        await send_error(send, ctx, code, detail, retry_after=retry_after, headers=headers)
    else:
        await _reject_websocket(scope, receive, send, ctx, code, detail, retry_after, headers)


async def _reject_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    ctx: RequestContext,
    code: str,
    detail: str,
    retry_after: int,
    headers: list[tuple[bytes, bytes]] | None,
) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    status = 429 if code == "rate_limited" else 503
    await refuse_websocket(
        send, scope, ctx, code, detail, status=status, retry_after=retry_after, headers=headers
    )
