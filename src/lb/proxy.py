"""The proxy handler: one ASGI callable that forwards a request to a backend of its pool.

It builds the upstream request, streams both ways, retries what may be retried, and maps upstream
failures to the balancer's own error responses. Failure classes and how they are answered:

    connect error / refused / DNS   -> retried on another backend (connect_error), else 502
    connect timeout / read timeout  -> retried if `timeout` is in retry_on and the method is
                                       idempotent, else 504
    pool timeout                    -> 503 unavailable (the balancer is out of connections)
    bad or no answer                -> 502 (retried only if the backend never got the request)
    retry_on status (502/503/504)   -> retried if idempotent, else passed on as the backend sent it
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
from lb.retry import IDEMPOTENT, RetryBudget
from lb.strategy import PickRequest

logger = logging.getLogger("lb.proxy")

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class ClientDisconnected(Exception):
    pass


class RequestBody(httpx.AsyncByteStream):
    """The client's request body as an httpx stream, read from ASGI `receive` as it arrives."""

    def __init__(self, receive: Any, expected: bool, on_done: Any) -> None:
        self._receive = receive
        self.expected = expected
        self.started = False
        self._on_done = on_done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if not self.expected or self.started:
            return
        self.started = True
        receive = self._receive
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                break
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
        self.retries = config.retries
        self.budget = retry_budget or RetryBudget(config.retries.budget_percent)
        timeouts = config.timeouts
        read = config.retries.per_try_timeout or timeouts.read
        self.timeout = {
            "connect": timeouts.connect,
            "read": read,
            "write": read,
            "pool": timeouts.pool,
        }
        self.retry_statuses = frozenset(int(s) for s in config.retries.retry_on if s.isdigit())
        self.retry_connect = "connect_error" in config.retries.retry_on
        self.retry_timeout = "timeout" in config.retries.retry_on
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
                await self._forward(scope, send, ctx, body)
            else:
                try:
                    async with asyncio.timeout(total):
                        await self._forward(scope, send, ctx, body)
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

    async def _forward(self, scope: Any, send: Any, ctx: RequestContext, body: RequestBody) -> None:
        pool = self.pool
        method = ctx.method
        request = PickRequest(scope, ctx.client_ip, pool.config.hash_key)
        tried: tuple[Backend, ...] = ()
        attempts = self.retries.attempts
        self.budget.record_request()
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
                    retry_after=1,
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
                response = await self.transport.handle_async_request(upstream)
            except httpx.HTTPError as exc:
                pool.done(backend, time.perf_counter() - start, False)
                ctx.error = _describe(exc)
                self.metrics.upstream_error(pool.name, backend.id, _kind(exc))
                logger.warning(
                    "upstream error: pool=%s backend=%s cause=%s request_id=%s",
                    pool.name,
                    backend.id,
                    ctx.error,
                    ctx.request_id.decode(),
                )
                if ctx.attempts < attempts and self._may_retry(exc, method, body):
                    continue
                return await self._answer_failure(send, ctx, exc)
            except BaseException:
                pool.done(backend, time.perf_counter() - start, False)
                raise
            status = response.status_code
            if (
                status in self.retry_statuses
                and ctx.attempts < attempts
                and (method in IDEMPOTENT)
                and not body.started
                and self.budget.try_acquire()
            ):
                await response.aclose()
                pool.done(backend, time.perf_counter() - start, False)
                continue
            try:
                ok = await self._stream_response(send, ctx, backend, response)
            finally:
                pool.done(backend, time.perf_counter() - start, ok and status < 500)
            return None

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

    def _may_retry(self, exc: httpx.HTTPError, method: str, body: RequestBody) -> bool:
        if isinstance(exc, httpx.PoolTimeout):
            return False
        if isinstance(exc, _NOT_SENT) or getattr(exc, "request_sent", True) is False:
            allowed = (
                self.retry_connect
                if not isinstance(exc, httpx.TimeoutException)
                else (self.retry_timeout or self.retry_connect)
            )
        elif isinstance(exc, httpx.TimeoutException):
            allowed = self.retry_timeout and method in IDEMPOTENT and not body.started
        else:
            return False
        return allowed and self.budget.try_acquire()

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
        self, send: Any, ctx: RequestContext, backend: Backend, response: httpx.Response
    ) -> bool:
        """Send the backend's response on; False if it broke off after the head was sent."""
        headers = downstream_response_headers(response.headers.raw, ctx.request_id)
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
