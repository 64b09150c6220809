"""The proxy handler: one ASGI callable that forwards a request to a backend of its pool.

It builds the upstream request, streams both ways, retries what may be retried (the rules and the
budget are in `lb.proxy.retry`), and maps upstream failures to the balancer's own error responses:

    connect error / refused / DNS   -> 502 (after retries)
    connect/read/per-try timeout    -> 504 (after retries)
    pool timeout, `limits` overflow -> 503 unavailable (the balancer is out of connections)
    bad or no answer                -> 502 (after retries)
    retry_on status (502/503/504)   -> passed on as the backend sent it once retries are spent
    no usable backend               -> 503 with Retry-After (see `PoolHealth.retry_after`)
    failure after the response head -> the client connection is aborted, never ended cleanly
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import httpx

from lb.backend import Backend
from lb.metrics import Metrics
from lb.pool import Pool
from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.proxy.downstream import (
    ClientDisconnected,
    RequestBody,
    Watcher,
    has_body,
    responder_for,
    watch_client,
)
from lb.proxy.errors import send_error
from lb.proxy.headers import downstream_response_headers, upstream_request_headers
from lb.proxy.retry import RetryBudget, RetryPolicy, describe_error, error_kind
from lb.strategy import PickRequest
from lb.transport import Origin, PoolOverflow, Timeouts, origin_of
from lb.types import (
    INTERIM_EXTENSION,
    Message,
    Receive,
    Responder,
    Scope,
    Send,
)

logger = logging.getLogger("lb.proxy")


class Upstream(Protocol):
    """A backend's response once its head has arrived: what `Transport.send_raw` returns
    (`lb.transport.ResponseStream`), or an httpx.Response seen through `HttpxUpstream`."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def complete_body(self) -> bytes | None:
        """The whole body if it has all arrived already, else None (then iterate)."""

    async def aclose(self) -> None: ...


class HttpxUpstream:
    """An httpx.Response as an `Upstream`, for transports other than lb's own."""

    __slots__ = ("status", "headers", "_response")

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self.headers = response.headers.raw
        self._response = response

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._response.stream.__aiter__()  # type: ignore[union-attr]

    def complete_body(self) -> bytes | None:
        return None

    async def aclose(self) -> None:
        await self._response.aclose()


# Transport.send_raw's signature: (origin, method, target, headers, body, timeouts, interim).
SendRaw = Callable[
    [Origin, bytes, bytes, Sequence[tuple[bytes, bytes]], bytes | AsyncIterable[bytes], Any, Any],
    Awaitable[Upstream],
]


async def _nothing_to_read() -> Message:
    raise AssertionError("a request without a body has nothing to receive")


class Proxy:
    """Forwards requests to `pool` through `transport`.

    With lb's own `Transport` the request goes through `send_raw`, which builds no httpx objects;
    any other httpx transport (`transport=httpx` in bench/lb_target.py, test doubles) is driven
    through its `handle_async_request` seam, with the same behaviour.
    """

    def __init__(
        self,
        pool: Pool,
        transport: httpx.AsyncBaseTransport,
        *,
        retry_budget: RetryBudget | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.pool = pool
        self.transport = transport
        self.metrics = metrics if metrics is not None else Metrics()
        config = pool.config
        self.policy = RetryPolicy(config.retries, retry_budget)
        self.budget = self.policy.budget
        t = config.timeouts
        self.timeouts = Timeouts(t.connect, t.read, t.read, t.pool, t.idle)
        self.preserve_host = config.preserve_host
        self._send_raw: SendRaw | None = getattr(transport, "send_raw", None)
        # Parsing a URL costs more than the rest of the request set-up: once per backend.
        self._origins: dict[Backend, Origin] = {}
        self._urls: dict[Backend, httpx.URL] = {}
        self._no_body = RequestBody(
            _nothing_to_read, False, None
        )  # never read: one for every bodiless request

    def __repr__(self) -> str:
        return f"<Proxy pool={self.pool.name}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[SCOPE_KEY]
        total = self.pool.config.timeouts.total
        watcher, send = watch_client(scope, receive, send)
        responder = responder_for(scope, send)  # None when a layer wraps `send`
        if has_body(scope["headers"]):
            body = RequestBody(receive, True, watcher.start)
        else:
            body = self._no_body
            watcher.start()
        try:
            if total is None:
                await self._forward(scope, send, ctx, body, watcher, responder)
            else:
                try:
                    async with asyncio.timeout(total):
                        await self._forward(scope, send, ctx, body, watcher, responder)
                except TimeoutError:
                    if ctx.backend is not None:
                        self.metrics.upstream_error(self.pool.name, ctx.backend, "timeout")
                    if ctx.status == 0:
                        await send_error(send, ctx, "timeout", "request exceeded timeouts.total")
                    else:
                        ctx.error = "timeout"
        except asyncio.CancelledError:
            if not watcher.disconnected:
                raise
            # The client left: the upstream request was cancelled with us; nothing to answer.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            ctx.error = ctx.error or "client_disconnected"
        except ClientDisconnected:
            ctx.error = ctx.error or "client_disconnected"
        finally:
            watcher.stop()
            ctx.bytes_received = body.received

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        ctx: RequestContext,
        body: RequestBody,
        watcher: Watcher,
        responder: Responder | None,
    ) -> None:
        pool = self.pool
        policy = self.policy
        request = PickRequest(scope, ctx.client_ip, pool.config.hash_key)
        tried: tuple[Backend, ...] = ()
        policy.budget.record_request()
        while True:
            backend = pool.pick(request, tried)
            if backend is None:
                if tried:
                    # Every backend failed this request already: the last failure stands.
                    return await self._answer_failure(send, ctx)
                return await send_error(
                    send,
                    ctx,
                    "no_backend",
                    f"no usable backend in pool {pool.name}",
                    retry_after=pool.health.retry_after(),
                )
            if tried:
                self.metrics.retry(pool.name)  # counted when another backend takes it
            tried += (backend,)
            ctx.attempts += 1
            ctx.backend = backend.id
            sending = self._send(scope, ctx, backend, body)
            start = time.perf_counter()
            pool.start(backend)
            ok = False
            try:
                if policy.per_try_timeout is None:
                    response = await sending
                else:
                    response = await policy.bounded(sending)
            except httpx.HTTPError as exc:
                # A request the transport would not write is the client's fault, not the backend's.
                ours = isinstance(exc, httpx.LocalProtocolError)
                pool.done(backend, time.perf_counter() - start, ours)
                ctx.error = describe_error(exc)
                self.metrics.upstream_error(pool.name, backend.id, error_kind(exc))
                if isinstance(exc, PoolOverflow):
                    self.metrics.traffic.overflow(pool.name, exc.limit)
                logger.warning(
                    "upstream error: pool=%s backend=%s cause=%s request_id=%s",
                    pool.name,
                    backend.id,
                    ctx.error,
                    ctx.request_id.decode(),
                )
                spent = not body.replayable
                if self._retry(ctx, tried, policy.error_retryable(exc, ctx.method, spent)):
                    continue
                return await self._answer_failure(send, ctx, exc)
            except BaseException as exc:
                # A client that left is no failure of the backend's (passive health must not
                # count it); a total timeout is.
                left = watcher.disconnected or isinstance(exc, ClientDisconnected)
                pool.done(backend, time.perf_counter() - start, left)
                raise
            status = response.status
            head = time.perf_counter() - start  # load-aware strategies judge by this, not streams
            ctx.upstream = head
            if policy.status_retryable(status, ctx.method, not body.replayable) and self._retry(
                ctx, tried, True
            ):
                await response.aclose()
                pool.done(backend, time.perf_counter() - start, False)
                continue
            try:
                set_cookie = pool.sticky_cookie(request, backend)
                ok = await self._stream_response(
                    send, ctx, backend, response, set_cookie, responder
                )
            finally:
                ok = ok or watcher.disconnected
                elapsed = time.perf_counter() - start
                pool.done(backend, elapsed, ok and status < 500, response_time=head)
            return None

    def _retry(self, ctx: RequestContext, tried: tuple[Backend, ...], retryable: bool) -> bool:
        """Retry on another backend: allowed by the rules, tries left, a backend left to try,
        and room in the budget (checked last, so it is spent only on a retry that happens)."""
        return (
            retryable
            and ctx.attempts < self.policy.attempts
            and self.pool.has_untried(tried)
            and self.policy.take()
        )

    def _send(
        self, scope: Scope, ctx: RequestContext, backend: Backend, body: RequestBody
    ) -> Awaitable[Upstream]:
        """The upstream request for one try, ready to be awaited."""
        peer = scope["client"][0] if scope.get("client") else ""
        headers = upstream_request_headers(
            scope["headers"],
            peer=peer,
            scheme=scope.get("scheme", "http"),
            request_id=ctx.request_id,
            host=None if self.preserve_host else backend.authority,
            fallback_host=backend.authority,
            peer_trusted=ctx.peer_trusted,
        )
        route = ctx.route
        timeouts = self.timeouts
        # The request-target is sent on the wire byte for byte; httpx.URL would normalise dot
        # segments and re-quote the path.
        if route is None:
            target = ctx.target
        else:
            target = route.upstream_path(ctx.target)
            if route.request_headers is not None:
                headers = route.request_headers.apply(headers, ctx, scope)
            if route.timeouts is not None:
                timeouts = route.timeouts
        send_raw = self._send_raw
        if send_raw is not None:
            origin = self._origins.get(backend)
            if origin is None:
                origin = self._origins[backend] = origin_of(backend.url)
            # No body stream for a bodiless request: starting an async generator costs more
            # than the rest of a small request's set-up.
            content = body if body.expected else b""
            method = ctx.method.encode("ascii")
            # 103 Early Hints go straight to the client, under lb's own server protocol.
            extensions = scope.get("extensions")
            interim = extensions.get(INTERIM_EXTENSION) if extensions else None
            return send_raw(origin, method, target, headers, content, timeouts, interim)
        return self._send_httpx(backend, ctx.method, target, headers, body, timeouts)

    async def _send_httpx(
        self,
        backend: Backend,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: RequestBody,
        timeouts: Timeouts,
    ) -> Upstream:
        url = self._urls.get(backend)
        if url is None:
            url = self._urls[backend] = httpx.URL(backend.url)
        request = httpx.Request(
            method,
            url,
            headers=headers,
            stream=body,
            # "target" (httpcore honours it too) is written instead of the URL's path.
            extensions={"timeout": timeouts._asdict(), "target": target},
        )
        response = await self.transport.handle_async_request(request)
        if not 100 <= response.status_code <= 599:
            # lb's transport refuses these itself; another one may hand them over.
            await response.aclose()
            message = f"malformed response from the backend: status {response.status_code}"
            raise httpx.RemoteProtocolError(message, request=request)
        return HttpxUpstream(response)

    async def _answer_failure(
        self, send: Send, ctx: RequestContext, exc: httpx.HTTPError | None = None
    ) -> None:
        detail = f"backend {ctx.backend}: {ctx.error}"
        if isinstance(exc, httpx.PoolTimeout):
            await send_error(send, ctx, "unavailable", detail, retry_after=1)
        elif isinstance(exc, httpx.TimeoutException) or ctx.error in ("connect_timeout", "timeout"):
            await send_error(send, ctx, "timeout", detail)
        else:
            await send_error(send, ctx, "bad_gateway", detail)

    async def _stream_response(
        self,
        send: Send,
        ctx: RequestContext,
        backend: Backend,
        response: Upstream,
        set_cookie: bytes | None = None,
        responder: Responder | None = None,
    ) -> bool:
        """Send the backend's response on; False if it broke off after the head was sent.
        `set_cookie` is the sticky session cookie to add, if any; a whole response goes to
        `responder` (lb's server, when no layer wraps `send`) in one call."""
        headers = downstream_response_headers(response.headers, ctx.request_id)
        if set_cookie is not None:
            headers.append((b"set-cookie", set_cookie))
        length = -1
        for name, value in headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                break
        status = response.status
        if ctx.method == "HEAD" or status == 204 or status == 304:
            length = 0  # bodiless, whatever Content-Length says (RFC 9110 6.4.1)
            if status == 204:  # and a 204 must not carry one (RFC 9110 8.6)
                headers = [h for h in headers if h[0] != b"content-length"]
        ctx.status = status
        sent = 0
        try:
            body = None if length == 0 else response.complete_body()
            if responder is not None and (body is not None or length == 0):
                data = body or b""
                if (length < 0 or len(data) == length) and responder.respond(status, headers, data):
                    sent = len(data)
                    return True
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if body is not None:
                # All of it came with the head: one message, and no iteration to end it.
                if length > 0 and len(body) != length:
                    raise httpx.RemoteProtocolError("response body does not match Content-Length")
                sent = len(body)
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return True
            if length != 0:
                async for chunk in response:
                    if not chunk:
                        continue
                    sent += len(chunk)
                    # With a known length the last chunk ends the response: one send fewer. The
                    # loop still runs to the stream's end, which costs nothing more with lb's
                    # transport and is how httpx's learns that its connection may be reused.
                    await send(
                        {"type": "http.response.body", "body": chunk, "more_body": sent != length}
                    )
            if sent != length or length == 0:
                if length > 0:
                    raise httpx.RemoteProtocolError("response body shorter than Content-Length")
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:
            ctx.error = describe_error(exc)
            self.metrics.upstream_error(self.pool.name, backend.id, "aborted")
            logger.warning(
                "upstream broke off mid-response, aborting the client connection: pool=%s "
                "backend=%s cause=%s request_id=%s",
                self.pool.name,
                backend.id,
                ctx.error,
                ctx.request_id.decode(),
            )
            # Returning without the final body message makes the server close the connection,
            # so the client sees a truncated response rather than a clean end.
            return False
        finally:
            ctx.bytes_sent = sent  # also when the client left mid-body
            await response.aclose()
        return True
