"""The proxy handler: one ASGI callable that forwards a request to a backend of its pool.

It builds the upstream request, streams both ways, retries what may be retried (the rules and the
budget are in `lb.retry`), and maps upstream failures to the balancer's own error responses:

    connect error / refused / DNS   -> 502 (after retries)
    connect/read/per-try timeout    -> 504 (after retries)
    pool timeout                    -> 503 unavailable (the balancer is out of connections)
    bad or no answer                -> 502 (after retries)
    retry_on status (502/503/504)   -> passed on as the backend sent it once retries are spent
    no usable backend               -> 503 with Retry-After (see `PoolHealth.retry_after`)
    failure after the response head -> the client connection is aborted, never ended cleanly
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from lb.backend import Backend
from lb.context import SCOPE_KEY, RequestContext
from lb.errors import send_error
from lb.headers import downstream_response_headers, upstream_request_headers
from lb.metrics import Metrics
from lb.pool import Pool
from lb.retry import RetryBudget, RetryPolicy
from lb.strategy import PickRequest

logger = logging.getLogger("lb.proxy")

REPLAY_LIMIT = 64 * 1024  # request body bytes kept so that a retry can send them again


class ClientDisconnected(Exception):
    pass


class RequestBody(httpx.AsyncByteStream):
    """The client's request body as an httpx stream, read from ASGI `receive` as it arrives.

    What is read is kept while it is no more than `REPLAY_LIMIT` bytes (or one chunk), so that a
    retry can send it again: a body that small, or any body of which a transport took only the
    first chunk before failing to connect. Past that the body streams on without being kept and
    cannot be sent again.
    """

    def __init__(self, receive: Any, expected: bool, on_done: Any) -> None:
        self._receive = receive
        self.expected = expected
        self.started = False  # some of it was read from the client
        self._kept: list[bytes] | None = []  # None: over REPLAY_LIMIT, cannot be sent again
        self._kept_bytes = 0
        self._more = expected  # the client has more to send
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

    def __init__(self, receive: Any, send: Any) -> None:
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

    async def send(self, message: Any) -> None:
        """`send`, standing down once the response is whole: the server reports a disconnect to
        every `receive` after that, which must not cancel the request's clean-up (closing the
        upstream response) nor count a delivered response as failed."""
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.stop()
        await self._send(message)


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


class Proxy:
    """Forwards requests to `pool` through `transport` (the httpx transport seam)."""

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
        self.timeout = {"connect": t.connect, "read": t.read, "write": t.read, "pool": t.pool}
        self.preserve_host = config.preserve_host
        self._urls: dict[Backend, httpx.URL] = {}

    def __repr__(self) -> str:
        return f"<Proxy pool={self.pool.name}>"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ctx: RequestContext = scope[SCOPE_KEY]
        total = self.pool.config.timeouts.total
        watcher = DisconnectWatcher(receive, send)
        send = watcher.send
        headers = scope["headers"]
        body = RequestBody(receive, _has_body(headers), watcher.start)
        if not body.expected:
            watcher.start()
        try:
            if total is None:
                await self._forward(scope, send, ctx, body, watcher)
            else:
                try:
                    async with asyncio.timeout(total):
                        await self._forward(scope, send, ctx, body, watcher)
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

    async def _forward(
        self,
        scope: Any,
        send: Any,
        ctx: RequestContext,
        body: RequestBody,
        watcher: DisconnectWatcher,
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
                    f"no usable backend in pool {pool.name!r}",
                    retry_after=pool.health.retry_after(),
                )
            if tried:
                self.metrics.retry(pool.name)  # counted when another backend takes it
            tried += (backend,)
            ctx.attempts += 1
            ctx.backend = backend.id
            upstream = self._build_request(scope, ctx, backend, body)
            start = time.perf_counter()
            pool.start(backend)
            ok = False
            try:
                if policy.per_try_timeout is None:
                    response = await self.transport.handle_async_request(upstream)
                else:
                    response = await policy.send(self.transport, upstream)
            except httpx.HTTPError as exc:
                # A request the transport would not write is the client's fault, not the backend's.
                ours = isinstance(exc, httpx.LocalProtocolError)
                pool.done(backend, time.perf_counter() - start, ours)
                ctx.error = _describe(exc)
                self.metrics.upstream_error(pool.name, backend.id, _kind(exc))
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
            status = response.status_code
            head = time.perf_counter() - start  # load-aware strategies judge by this, not streams
            if policy.status_retryable(status, ctx.method, not body.replayable) and self._retry(
                ctx, tried, True
            ):
                await response.aclose()
                pool.done(backend, time.perf_counter() - start, False)
                continue
            try:
                set_cookie = pool.sticky_cookie(request, backend)
                ok = await self._stream_response(send, ctx, backend, response, set_cookie)
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

    def _build_request(
        self, scope: Any, ctx: RequestContext, backend: Backend, body: RequestBody
    ) -> httpx.Request:
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
        target = ctx.target if route is None else route.upstream_path(ctx.target)
        url = self._urls.get(backend)
        if url is None:
            # Parsing a URL string costs more than the rest of the request set-up: once per backend.
            url = self._urls[backend] = httpx.URL(backend.url)
        request = httpx.Request(
            ctx.method,
            url,
            headers=headers,
            stream=body,
            # "target" is the request-target sent on the wire, byte for byte (httpcore honours it
            # too); httpx.URL would normalise dot segments and re-quote the path.
            extensions={"timeout": self.timeout, "target": target},
        )
        return request

    async def _answer_failure(
        self, send: Any, ctx: RequestContext, exc: httpx.HTTPError | None = None
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
        send: Any,
        ctx: RequestContext,
        backend: Backend,
        response: httpx.Response,
        set_cookie: bytes | None = None,
    ) -> bool:
        """Send the backend's response on; False if it broke off after the head was sent.
        `set_cookie` is the sticky session cookie to add, if any."""
        headers = downstream_response_headers(response.headers.raw, ctx.request_id)
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
        if ctx.method == "HEAD":
            length = 0
        ctx.status = response.status_code
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        sent = 0
        try:
            if length != 0:
                async for chunk in response.stream:  # type: ignore[union-attr]
                    sent += len(chunk)
                    # With a known length the last chunk ends the response: one send fewer.
                    await send(
                        {"type": "http.response.body", "body": chunk, "more_body": sent != length}
                    )
                    if sent == length:
                        break
            if sent != length or length == 0:
                if length > 0:
                    raise httpx.RemoteProtocolError("response body shorter than Content-Length")
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:
            ctx.bytes_sent = sent
            ctx.error = _describe(exc)
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
            await response.aclose()
        ctx.bytes_sent = sent
        return True


def _kind(exc: httpx.HTTPError) -> str:
    """The `kind` label of lb_upstream_errors_total."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.PoolTimeout):
        return "pool_timeout"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return "bad_response"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, httpx.ConnectError):
        return f"connect_error ({exc})" if str(exc) else "connect_error"
    if isinstance(exc, httpx.PoolTimeout):
        return "pool_timeout"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    text = str(exc)
    return f"{type(exc).__name__} ({text})" if text else type(exc).__name__
