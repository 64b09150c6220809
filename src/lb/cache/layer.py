"""`CacheLayer`: the pure-ASGI cache in front of one route's proxy handler.

Per request it decides, by the rules in `lb.cache.rules`, between answering from the store (HIT,
or STALE when a stale answer is allowed), going upstream and storing what comes back (MISS), or
passing the request through untouched (BYPASS). Every response it lets out carries `X-Cache` with
that result, which also goes to `ctx.cache` (access log) and the metrics.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lb.cache.conditional import (
    CLIENT_CONDITIONALS,
    not_modified,
    not_modified_headers,
    validation_headers,
)
from lb.cache.fetch import Outcome, Tee, idle_receive, tag_miss, with_x_cache
from lb.cache.keys import invalidated_targets, normalize_host, primary_key
from lb.cache.ranges import UNSATISFIABLE, byte_range, content_range, unsatisfied_range
from lb.cache.request import CacheRequest, cache_request
from lb.cache.rules import SAFE_METHODS, Reuse, age_header, reuse
from lb.cache.store import StoreError
from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.proxy.downstream import responder_for
from lb.proxy.errors import send_error
from lb.proxy.headers import new_request_id
from lb.types import Receive, Scope, Send

if TYPE_CHECKING:
    from lb.cache.cache import Cache
    from lb.cache.entry import Entry

# What a 416 keeps of the stored response: the fields that describe the representation as a whole.
_UNSATISFIED_FIELDS = frozenset({b"date", b"etag", b"last-modified", b"cache-control", b"expires"})
_X_CACHE = {name: name.encode("ascii") for name in ("HIT", "MISS", "STALE", "BYPASS")}


def _tagged(message: Any, result: bytes) -> Any:
    return {**message, "headers": with_x_cache(message["headers"], result)}


class CacheLayer:
    __slots__ = ("inner", "cache")

    def __init__(self, inner: Any, cache: Cache) -> None:
        self.inner = inner
        self.cache = cache

    def __repr__(self) -> str:
        return f"<CacheLayer {self.cache!r} -> {self.inner!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[SCOPE_KEY]
        method = ctx.method
        if method == "GET" or method == "HEAD":
            request = cache_request(scope, method, ctx.target, self.cache.directives_memo)
            if request is not None:
                await self._cached(scope, receive, send, ctx, request, True)
                return
        elif method not in SAFE_METHODS:
            await self._unsafe(scope, receive, send, ctx)
            return
        await self._bypass(scope, receive, send, ctx)

    def _result(self, ctx: RequestContext, result: str) -> None:
        ctx.cache = result
        self.cache.metrics.cache(result)

    async def _cached(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ctx: RequestContext,
        request: CacheRequest,
        collapse: bool,
    ) -> None:
        cache = self.cache
        now = cache.clock()
        try:
            # A no-store request is never answered from the store either: its client asked
            # that nothing of this exchange be kept, so it is not served a kept one.
            entry = None if request.directives.no_store else await cache.lookup(request, now)
        except StoreError as exc:
            cache.store_failed(exc)
            await self._bypass(scope, receive, send, ctx)
            return
        if entry is not None:
            age = entry.age(now)
            decision = reuse(entry.policy, age, request.directives)
            if decision is Reuse.FRESH:
                await self._serve(scope, send, ctx, request, entry, age, "HIT")
                return
            if decision is Reuse.STALE:
                await self._serve(scope, send, ctx, request, entry, age, "STALE")
                return
            if decision is Reuse.STALE_WHILE_REVALIDATE:
                self._refresh_later(scope, ctx, request, entry)
                await self._serve(scope, send, ctx, request, entry, age, "STALE")
                return
        if request.directives.only_if_cached:
            self._result(ctx, "MISS")
            await send_error(
                send,
                ctx,
                "timeout",
                "only-if-cached: no stored response may answer this request",
                headers=[(b"x-cache", b"MISS")],
            )
            return
        primary = request.primary
        if collapse and request.collapsible and cache.collapsible(primary):
            event = cache.inflight.get(primary)
            if event is not None:
                # The same request is already upstream: wait for its entry and look again.
                await cache.wait_for(event)
                await self._cached(scope, receive, send, ctx, request, False)
                return
            release = cache.lead(primary)
            try:
                await self._fetch(scope, receive, send, ctx, request, entry, release)
            finally:
                release()
            return
        await self._fetch(scope, receive, send, ctx, request, entry, None)

    async def _fetch(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ctx: RequestContext,
        request: CacheRequest,
        stale: Entry | None,
        release: Any,
    ) -> None:
        """Go upstream for a miss, or to revalidate `stale`."""
        cache = self.cache
        if stale is None and release is None and not request.may_store:
            # Nothing to store, nothing stale to refresh: the response goes on as it is, only
            # tagged. Under lb's server, with no layer around `send`, the tag is a head hook, so
            # the proxy still answers in one call (the Tee would make it stream messages).
            responder = responder_for(scope, send)
            if responder is not None:
                responder.on_head(tag_miss)
                await self.inner(scope, receive, send)
                self._result(ctx, "MISS")
                return
        headers = request.headers
        if stale is not None:
            upstream = validation_headers(headers, stale.etag, stale.last_modified_raw)
        elif request.conditions is not None and request.may_store and request.range is None:
            # Ask for the full response so it can be stored; the client's condition is then
            # evaluated here (Tee).
            upstream = [(n, v) for n, v in headers if n not in CLIENT_CONDITIONALS]
        else:
            upstream = headers
        inner_scope = scope if upstream is headers else {**scope, "headers": upstream}
        tee = Tee(cache, request, send, stale=stale, request_time=cache.clock(), release=release)
        await self.inner(inner_scope, receive, tee)
        outcome = tee.outcome
        if outcome is not Outcome.FORWARDED or tee.answered_304:
            ctx.bytes_sent = 0  # the proxy counted a body the client never got
            if tee.answered_304:
                ctx.status = 304
        if outcome is Outcome.REFRESHED and tee.entry is not None:
            entry = tee.entry
            await cache.put(entry)
            if release is not None:
                release()
            await self._serve(scope, send, ctx, request, entry, entry.age(cache.clock()), "HIT")
        elif outcome is Outcome.USE_STALE and stale is not None:
            await self._serve(scope, send, ctx, request, stale, stale.age(cache.clock()), "STALE")
        elif outcome is Outcome.MISMATCH and stale is not None:
            await cache.invalidate([stale.primary])
            await self._refetch(scope, receive, send, ctx, request, release)
        else:
            self._result(ctx, "MISS")
            if tee.answered_304:
                await tee.finish()
            if release is not None and tee.outcome is Outcome.FORWARDED and not tee.storable:
                cache.uncacheable(request.primary)

    async def _refetch(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ctx: RequestContext,
        request: CacheRequest,
        release: Any,
    ) -> None:
        """Ask again without conditions after a 304 that validated another representation than
        the stored one (it updates nothing, RFC 9111 §4.3.4). This is a request of the cache's,
        not a retry of the client's: it runs under a context of its own, so the retry policy
        gives it every try it gives any request, and the client's record then describes the
        answer it got."""
        own = RequestContext(
            ctx.request_id,
            ctx.client_ip,
            ctx.peer_trusted,
            ctx.method,
            ctx.target,
            ctx.route,
            ctx.start,
        )
        await self._fetch({**scope, SCOPE_KEY: own}, receive, send, own, request, None, release)
        ctx.status = own.status
        ctx.bytes_sent = own.bytes_sent
        ctx.backend = own.backend
        ctx.attempts = own.attempts
        ctx.error = own.error
        ctx.cache = own.cache

    async def _serve(
        self,
        scope: Scope,
        send: Send,
        ctx: RequestContext,
        request: CacheRequest,
        entry: Entry,
        age: float,
        result: str,
    ) -> None:
        self._result(ctx, result)
        if (
            request.conditions is not None
            and entry.status == 200
            and not_modified(request.conditions, entry.etag, entry.last_modified, entry.date)
        ):
            status = 304
            headers = not_modified_headers(entry.headers)
            body = b""
        elif request.range is not None and entry.status == 200:
            status, headers, body = _ranged(entry, request.range)
        else:
            status = entry.status
            headers = entry.headers.copy()
            body = entry.body if request.method == "GET" else b""
        headers.append((b"age", age_header(age)))
        headers.append((b"x-request-id", ctx.request_id))
        headers.append((b"x-cache", _X_CACHE[result]))
        ctx.status = status
        ctx.bytes_sent = len(body)
        responder = responder_for(scope, send)  # lb's server, no layer around: in one call
        if responder is None or not responder.respond(status, headers, body):
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    def _refresh_later(
        self, scope: Scope, ctx: RequestContext, request: CacheRequest, entry: Entry
    ) -> None:
        """stale-while-revalidate: revalidate `entry` in the background, once per entry."""
        cache = self.cache
        method = ctx.method
        if method == "HEAD" and entry.primary.startswith(b"GET "):
            request = request.as_get()
            method = "GET"
        own = RequestContext(
            new_request_id(),
            ctx.client_ip,
            ctx.peer_trusted,
            method,
            ctx.target,
            ctx.route,
            time.perf_counter(),
        )
        # The refresh is for the whole stored response, whatever part this client asked for.
        headers = validation_headers(
            [(n, v) for n, v in request.headers if n != b"range"],
            entry.etag,
            entry.last_modified_raw,
        )
        # No client connection: none of the server's extensions (the disconnect callback of
        # lb's protocol, above all) applies to this request.
        inner_scope = {
            **scope,
            "method": method,
            "headers": headers,
            "extensions": {},
            SCOPE_KEY: own,
        }

        async def refresh() -> None:
            tee = Tee(cache, request, None, stale=entry, request_time=cache.clock())
            await self.inner(inner_scope, idle_receive(), tee)
            if tee.outcome is Outcome.REFRESHED and tee.entry is not None:
                await cache.put(tee.entry)
            elif tee.outcome is Outcome.MISMATCH:
                await cache.invalidate([entry.primary])

        cache.refresh_in_background(entry.primary + b"\n" + entry.secondary, refresh)

    async def _bypass(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        self._result(ctx, "BYPASS")

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = _tagged(message, b"BYPASS")
            await send(message)

        await self.inner(scope, receive, tagged)

    async def _unsafe(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext
    ) -> None:
        """Unsafe methods pass through; a non-error answer invalidates the target URI and the
        same-origin Location / Content-Location (RFC 9111 §4.4) before it reaches the client."""
        self._result(ctx, "BYPASS")
        cache = self.cache
        scheme: str = scope.get("scheme", "http")
        raw_host = next((v for n, v in scope["headers"] if n == b"host"), b"")
        host = normalize_host(scheme, raw_host)

        async def invalidating(message: Any) -> None:
            if message["type"] == "http.response.start":
                if 200 <= message["status"] < 400 and host is not None:
                    targets = invalidated_targets(scheme, host, ctx.target, message["headers"])
                    await cache.invalidate(
                        [primary_key(m, scheme, host, t) for t in targets for m in ("GET", "HEAD")]
                    )
                message = _tagged(message, b"BYPASS")
            await send(message)

        await self.inner(scope, receive, invalidating)


def _ranged(entry: Entry, value: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A stored complete 200 answering a Range request (RFC 9110 §14, §15.3.7, §15.5.17)."""
    body = entry.body
    length = len(body)
    found = byte_range(value, length)
    if found is None:
        return 200, entry.headers.copy(), body
    if found == UNSATISFIABLE:
        headers = [(n, v) for n, v in entry.headers if n in _UNSATISFIED_FIELDS]
        headers.append((b"content-range", unsatisfied_range(length)))
        headers.append((b"content-length", b"0"))
        return 416, headers, b""
    first, last = found
    headers = [(n, v) for n, v in entry.headers if n != b"content-length"]
    headers.append((b"content-range", content_range(first, last, length)))
    headers.append((b"content-length", str(last - first + 1).encode("ascii")))
    return 206, headers, body[first : last + 1]
