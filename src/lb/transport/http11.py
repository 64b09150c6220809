"""`Transport`: httpx's transport seam over pooled asyncio HTTP/1.1 connections.

The request path, fastest case first: an idle connection is popped from the origin's deque,
the head (and a small body) goes out in one write, and the request coroutine waits on one
future that the parser resolves with the response head. Opening connections, queueing for a
slot and sending a request again after a stale connection are the slow paths, kept out of the way.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import suppress
from types import MappingProxyType
from typing import Final, NamedTuple

import httpx

from lb.tls import ClientTLS
from lb.transport.connection import Connection, Interim
from lb.transport.errors import PoolOverflow, StaleConnection, stale_error, tag
from lb.transport.framing import RawHeaders, body_framing, encode_head, frame_body, open_stream
from lb.transport.pool import Limits, OriginPool
from lb.transport.stream import ResponseStream

Origin = tuple[bytes, bytes, int]  # (scheme, host, port), as the pools are keyed


class Timeouts(NamedTuple):
    """Seconds, None for no limit: what httpx's "timeout" request extension holds, and `idle`:
    how long the connection may then wait in the pool for its next request (None: the
    transport's `keepalive_expiry`)."""

    connect: float | None
    read: float | None
    write: float | None
    pool: float | None
    idle: float | None = None

    @classmethod
    def of(cls, extension: Mapping[str, float | None]) -> Timeouts:
        get = extension.get
        return cls(get("connect"), get("read"), get("write"), get("pool"), get("idle"))


_DEFAULT_PORTS: Final = MappingProxyType({b"http": 80, b"https": 443})
# An httpx request extension: a true value sends the request past the origin's `limits`.
UNLIMITED: Final = "lb.unlimited"


class Transport(httpx.AsyncBaseTransport):
    """A fast upstream HTTP/1.1 transport: `httpx.AsyncClient(transport=Transport())`.

    One pool per origin, at most `max_connections_per_origin` connections each, of which at
    most `max_idle_per_origin` are kept idle, each for at most its request's `Timeouts.idle`
    (default `keepalive_expiry`: below the 5 s after which uvicorn, Node and Apache close idle
    connections) or what the backend's `Keep-Alive: timeout=N` allows, less a margin.
    `connect_timeout` applies to requests that carry no "timeout" extension (httpx's client
    always sets one). `ssl_context` is used for https origins (default: the system's CAs).

    Requests may carry the "target" extension (bytes) to send a request target that
    httpx.URL would normalise (dot segments): it is written instead of `url.raw_path`.

    Use one Transport per event loop.
    """

    def __init__(
        self,
        *,
        max_connections_per_origin: int = 1000,
        max_idle_per_origin: int = 256,
        keepalive_expiry: float = 4.0,
        connect_timeout: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections_per_origin < 1:
            raise ValueError("max_connections_per_origin must be at least 1")
        if max_idle_per_origin < 0 or keepalive_expiry < 0:
            raise ValueError("max_idle_per_origin and keepalive_expiry must not be negative")
        if connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        self._max_connections = max_connections_per_origin
        self._max_idle = max_idle_per_origin
        self._keepalive_expiry = keepalive_expiry
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._pools: dict[Origin, OriginPool[Connection]] = {}
        self._tls: dict[Origin, ClientTLS] = {}  # per-origin settings (a pool's `tls`)
        self._limits: dict[Origin, Limits] = {}  # per-origin circuit breakers (`limits`)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False

    def __repr__(self) -> str:
        pools = self._pools.values()
        active = sum(pool.active for pool in pools)
        idle = sum(len(pool.idle) for pool in pools)
        closed = ", closed" if self._closed else ""
        return f"<Transport [origins: {len(pools)}, active: {active}, idle: {idle}{closed}]>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's seam: the request and response as httpx objects, over `send_raw`."""
        url = request.url
        origin = origin_of(url)
        timeout = request.extensions.get("timeout")
        body: bytes | AsyncIterable[bytes]
        try:
            body = request.content
        except httpx.RequestNotRead:
            stream = request.stream
            if not isinstance(stream, httpx.AsyncByteStream):
                raise TypeError("Transport needs an async request stream") from None
            body = stream
        response = await self.send_raw(
            origin,
            request.method.encode("ascii"),
            request.extensions.get("target") or url.raw_path,
            request.headers.raw,
            body,
            None if timeout is None else Timeouts.of(timeout),
            None,
            request=request,
            limited=not request.extensions.get(UNLIMITED),
        )
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=response,
            request=request,
            extensions={"http_version": response.http_version, "reason_phrase": response.reason},
        )

    async def send_raw(
        self,
        origin: Origin,
        method: bytes,
        target: bytes,
        headers: RawHeaders,
        body: bytes | AsyncIterable[bytes] = b"",
        timeouts: Timeouts | None = None,
        interim: Interim | None = None,
        *,
        request: httpx.Request | None = None,
        limited: bool = True,
    ) -> ResponseStream:
        """Send one request; return its response once the head has arrived (the body streams).

        The interface under `handle_async_request`, without httpx's Request and Response objects,
        whose construction (URL, header normalisation) costs more than the exchange itself: the
        proxy uses it. `origin` is (scheme, host, port) as `origin_of` makes it; `target` and
        `headers` are written byte for byte; `body` is the whole body or an async iterable of
        chunks (pass b"" for none: starting an iterator costs more than a small request);
        `timeouts` are (connect, read, write, pool, idle) seconds, None for no limit (default:
        the transport's connect_timeout and keepalive_expiry, and no other limit). `interim`
        is called with (status, raw headers) of each interim response but 100 Continue.
        Failures are the httpx exceptions of the module docstring, with `request` attached
        only when given. `limited=False` (httpx: the UNLIMITED extension, which health checks
        set) is not held by the origin's `limits`, as Envoy's health checks are not by its circuit
        breakers: it never overflows and may open a connection past `max_connections`, closed
        once its exchange is done.

        A request that meets a reused connection the backend has closed (no byte of the
        response came) is sent once more on a new connection, whatever its method: with its
        whole body when that was bytes or fitted the first write, else by iterating `body` again
        if it says it can (a true `replayable` attribute, as `lb.proxy.downstream.RequestBody` has
        while it holds all it has read); otherwise the failure is raised.
        """
        if self._closed:
            raise _closed_error(request)
        if timeouts is None:
            connect_t: float | None = self._connect_timeout
            read_t = write_t = pool_t = None
            idle_t = self._keepalive_expiry
        else:
            connect_t, read_t, write_t, pool_t, idle = timeouts
            idle_t = self._keepalive_expiry if idle is None else idle

        # Framing: the caller's headers decide; a streamed body's first chunk is fetched
        # before a connection is taken, so a slow client does not hold one.
        content_length, chunked = body_framing(headers, request)
        rest: AsyncIterator[bytes] | None = None
        remaining: int | None = None
        if isinstance(body, bytes):
            if body or chunked or content_length is not None:
                payload, add_chunked = frame_body(body, content_length, chunked, request)
            else:
                payload, add_chunked = b"", False  # most requests: no body, no call
        else:
            payload, add_chunked, rest, remaining = await open_stream(
                body, content_length, chunked, request
            )
        head = encode_head(method, target, headers, add_chunked=add_chunked, request=request)
        is_head = method == b"HEAD"

        fresh = False  # after a stale connection: do not take another idle one
        while True:
            if self._closed:  # checked again: a retry may come after aclose()
                raise _closed_error(request)
            pool = self._pools.get(origin) or self._open_pool(origin)
            conn = None if fresh else pool.take_idle()
            reused = conn is not None
            if conn is None:
                conn, reused = await self._acquire(
                    pool, origin, request, pool_t, connect_t, limited
                )
            conn.keepalive = idle_t
            try:
                return await conn.exchange(
                    request, is_head, head, payload, rest, remaining, read_t, write_t, interim
                )
            except StaleConnection as exc:
                # The backend closed a kept-alive connection as the request went out, before
                # reading it (it answered nothing): send it again on a new connection, with
                # its body if that can be had again. Once: a new connection is never stale.
                if reused and not fresh:
                    fresh = True
                    if rest is None:
                        continue  # all of the body is in `payload`
                    if not isinstance(body, bytes) and getattr(body, "replayable", False):
                        payload, add_chunked, rest, remaining = await open_stream(
                            body, content_length, chunked, request
                        )
                        head = encode_head(
                            method, target, headers, add_chunked=add_chunked, request=request
                        )
                        continue
                raise stale_error(exc, request) from exc.__cause__

    def set_tls(self, origin: Origin, tls: ClientTLS | None) -> None:
        """Open new connections to the https `origin` with `tls` (None: `ssl_context`, else the
        system's CAs). Connections opened under other settings are not reused; a new context
        with the same settings (renewed files) is simply used from now on."""
        old = self._tls.get(origin)
        if tls is None:
            self._tls.pop(origin, None)
        else:
            self._tls[origin] = tls
        if (old.settings if old else None) == (tls.settings if tls else None):
            return
        pool = self._pools.pop(origin, None)
        if pool is not None:
            # Detached: its busy connections finish their exchange, then close on release.
            pool.max_idle = 0
            while pool.idle:
                conn = pool.idle.pop()
                conn.pooled = False
                conn.close()

    def set_limits(self, limits: Mapping[Origin, Limits]) -> None:
        """Make `limits` the circuit breakers of their origins; other origins lose theirs."""
        for origin in self._limits.keys() - limits.keys():
            pool = self._pools.get(origin)
            if pool is not None:
                pool.limit(None)
        self._limits = dict(limits)
        for origin, value in self._limits.items():
            pool = self._pools.get(origin)
            if pool is not None:
                pool.limit(value)

    def load(self, origin: Origin) -> tuple[int, int]:
        """(connections open or opening, requests waiting for one) to `origin`."""
        pool = self._pools.get(origin)
        return (0, 0) if pool is None else (pool.size, pool.queued)

    async def aclose(self) -> None:
        """Close every connection; requests waiting for one fail with ConnectError."""
        if self._closed:
            return
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        pools = list(self._pools.values())
        self._pools.clear()
        for pool in pools:
            for conn in pool.close(lambda: _closed_error(None)):
                conn.abort(None)  # an exchange in flight fails with ReadError

    # -- the slow paths -------------------------------------------------------------------------

    def _open_pool(self, origin: Origin) -> OriginPool[Connection]:
        scheme, host, port = origin
        if scheme not in _DEFAULT_PORTS or not host:
            message = f"need an http:// or https:// origin with a host, not {origin!r}"
            raise tag(httpx.UnsupportedProtocol(message), sent=False)
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("a Transport serves one event loop; create one per loop")
        pool: OriginPool[Connection] = OriginPool(
            f"{scheme.decode()}://{host.decode()}:{port}",
            max_connections=self._max_connections,
            max_idle=self._max_idle,
            keepalive_expiry=self._keepalive_expiry,
            clock=loop.time,
        )
        limits = self._limits.get(origin)
        if limits is not None:
            pool.limit(limits)
        self._pools[origin] = pool
        return pool

    async def _acquire(
        self,
        pool: OriginPool[Connection],
        origin: Origin,
        request: httpx.Request | None,
        pool_timeout: float | None,
        connect_timeout: float | None,
        limited: bool = True,
    ) -> tuple[Connection, bool]:
        """A connection and whether it was reused: a new one if a slot is free, else wait
        (`limited=False`: past `limits`, see `send_raw`)."""
        while True:
            if pool.closed:
                raise _closed_error(request)
            if pool.reserve(limited):
                return await self._connect(pool, origin, request, connect_timeout), False
            if limited and pool.overflows():
                message = (
                    f"{pool.max_pending} requests already wait for a connection to {pool.origin}"
                )
                raise tag(PoolOverflow(message, request=request), sent=False)
            granted = await self._wait(pool, request, pool_timeout)
            if granted is None:  # a slot, passed on by a connection that closed
                return await self._connect(pool, origin, request, connect_timeout), False
            if not granted.closed:
                return granted, True
            # Released to us, then closed by the backend before we ran: queue again.

    async def _wait(
        self, pool: OriginPool[Connection], request: httpx.Request | None, timeout: float | None
    ) -> Connection | None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Connection | None] = loop.create_future()
        pool.waiters.append(waiter)
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter, request)
        try:
            return await waiter
        except BaseException as exc:
            if isinstance(exc, httpx.ConnectError) and request is not None:
                exc.request = request  # from aclose(), which does not know our request
            if not waiter.done() or waiter.cancelled() or waiter.exception() is not None:
                with suppress(ValueError):
                    pool.waiters.remove(waiter)  # O(queue), on this failure path only
            else:
                # Granted, but our task was cancelled before it could use the grant.
                granted = waiter.result()
                if granted is None:
                    pool.free_slot()
                elif not granted.closed:
                    pool.release(granted)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def _connect(
        self,
        pool: OriginPool[Connection],
        origin: Origin,
        request: httpx.Request | None,
        timeout: float | None,
    ) -> Connection:
        """Open a connection in a slot already reserved; the slot is freed if this fails."""
        loop = asyncio.get_running_loop()
        scheme, raw_host, port = origin
        host = raw_host.decode("ascii")
        context = None
        server_hostname = None
        if scheme == b"https":
            tls = self._tls.get(origin)
            if tls is not None:
                context, server_hostname = tls.context, tls.server_hostname(host)
            else:
                if self._ssl_context is None:
                    self._ssl_context = ssl.create_default_context()
                context, server_hostname = self._ssl_context, host
        conn = Connection(pool, loop)
        try:
            connecting = loop.create_connection(
                lambda: conn, host, port, ssl=context, server_hostname=server_hostname
            )
            if timeout is None:
                await connecting
            else:
                await asyncio.wait_for(connecting, timeout)
        except BaseException as exc:
            # The slot is given back here, not by `conn` when it hears of the close. A
            # transport exists only if we were cancelled just after it connected.
            conn.closed = True
            if conn.transport is not None:
                conn.transport.abort()
            pool.free_slot()
            if isinstance(exc, TimeoutError):
                message = f"timed out connecting to {pool.origin}"
                raise tag(httpx.ConnectTimeout(message, request=request), sent=False) from exc
            if isinstance(exc, OSError):  # refused, unreachable, DNS, TLS
                message = f"cannot connect to {pool.origin}: {exc}"
                raise tag(httpx.ConnectError(message, request=request), sent=False) from exc
            raise
        if pool.closed:
            conn.abort(None)
            raise _closed_error(request)
        pool.connections.add(conn)
        self._arm_reaper(loop)
        return conn

    def _arm_reaper(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._reaper is None and not self._closed:
            # Release already closes one expired connection per call; this timer catches
            # the ones left when traffic stops. It runs only while connections exist.
            interval = max(self._keepalive_expiry / 2, 0.05)
            self._reaper = loop.call_later(interval, self._reap, loop)

    def _reap(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reaper = None
        for origin, pool in list(self._pools.items()):
            pool.prune()
            if not pool.size and not pool.waiters:
                del self._pools[origin]
        if self._pools:
            self._arm_reaper(loop)


def origin_of(url: str | httpx.URL) -> Origin:
    """The (scheme, host, port) key of `url` for `Transport.send_raw`."""
    if not isinstance(url, httpx.URL):
        url = httpx.URL(url)
    scheme = url.raw_scheme
    return (scheme, url.raw_host, url.port or _DEFAULT_PORTS.get(scheme, 0))


def _expire(waiter: asyncio.Future[Connection | None], request: httpx.Request | None) -> None:
    if not waiter.done():
        error = httpx.PoolTimeout("timed out waiting for a connection", request=request)
        waiter.set_exception(tag(error, sent=False))


def _closed_error(request: httpx.Request | None) -> httpx.ConnectError:
    return tag(httpx.ConnectError("the transport is closed", request=request), sent=False)
