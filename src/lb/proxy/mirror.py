"""A route's `mirror`: fire-and-forget copies of a share of its requests to another pool.

The client's request goes on untouched: its body streams to the primary pool as it comes, and
`receive` is only teed into a buffer of at most `max_body_bytes`. A copy starts once its body is
whole (at once for a request without one) and runs as a task of its own, so it never delays,
changes or fails the client's request. Its response is read and discarded.

A copy that cannot be made is dropped and counted, never queued: `max_in_flight` copies of this
route are under way already, the body is over `max_body_bytes` (or did not arrive whole: the
primary stopped reading it), the mirror pool has no backend to pick, or the layer is stopped.
`percent` is applied deterministically (a running credit, not a random draw): of any 100
consecutive requests, `percent` are copied (rounded), so 0 and 100 are exact.

The layer is a `Service` of its generation: stopping it (shutdown, or a reload that replaces
the generation) cancels the copies under way and awaits them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

import httpx

from lb.backend import Backend
from lb.config import MirrorConfig
from lb.metrics import Metrics
from lb.pool import Pool
from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.proxy.headers import upstream_request_headers
from lb.strategy import PickRequest
from lb.transport import Timeouts, Transport, origin_of
from lb.types import Handler, Message, Receive, Scope, Send

logger = logging.getLogger("lb.proxy")

MIRRORED_FROM = b"x-mirrored-from"


class Mirror:
    """`app` (the route's proxy) with copies of `config.percent` of the requests sent to `pool`.

    `source` names where the copies come from in their `X-Mirrored-From` header: the route's
    primary pool (routes have no names)."""

    def __init__(
        self,
        app: Handler,
        config: MirrorConfig,
        source: str,
        pool: Pool,
        transport: Transport,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.config = config
        self.source = source
        self.pool = pool
        self.transport = transport
        self.metrics = metrics
        self.in_flight = 0  # copies reserved: waiting for their body, or under way
        self.tasks: set[asyncio.Task[None]] = set()  # kept referenced until done
        self.stopped = False
        self._credit = 0.0
        self._header = (MIRRORED_FROM, source.encode("latin-1"))
        t = pool.config.timeouts
        self._timeouts = Timeouts(t.connect, t.read, t.read, t.pool, t.idle)

    def __repr__(self) -> str:
        return (
            f"<Mirror {self.source} -> {self.pool.name} [{self.config.percent:g}%, "
            f"in flight: {self.in_flight}/{self.config.max_in_flight}]>"
        )

    async def start(self) -> None:
        self.stopped = False

    async def stop(self) -> None:
        """Cancel the copies under way and wait for them to end."""
        self.stopped = True
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._sampled():
            return await self.app(scope, receive, send)
        if self.stopped or self.in_flight >= self.config.max_in_flight:
            self._count("dropped")
            return await self.app(scope, receive, send)
        length, streamed = _body_size(scope["headers"])
        if not streamed and length == 0:
            self.in_flight += 1
            self.launch(scope, b"")
            return await self.app(scope, receive, send)
        limit = self.config.max_body_bytes
        if length > limit:
            self._count("dropped")
            return await self.app(scope, receive, send)
        self.in_flight += 1
        tee = _Tee(self, scope, receive, limit)
        try:
            await self.app(scope, tee.receive, send)
        finally:
            if not tee.settled:  # the primary did not read the whole body: no copy
                tee.settled = True
                self.give_up()

    def _sampled(self) -> bool:
        percent = self.config.percent
        if percent >= 100.0:
            return True
        credit = self._credit + percent
        if credit < 100.0:
            self._credit = credit
            return False
        self._credit = credit - 100.0
        return True

    def _count(self, result: str) -> None:
        self.metrics.traffic.mirror(self.source, self.pool.name, result)

    def give_up(self) -> None:
        """Release a reserved slot whose copy will not be made."""
        self.in_flight -= 1
        self._count("dropped")

    def launch(self, scope: Scope, body: bytes) -> None:
        """Start the copy in a slot already reserved (`in_flight`)."""
        if self.stopped:
            self.give_up()
            return
        ctx: RequestContext = scope[SCOPE_KEY]
        request = PickRequest(scope, ctx.client_ip, self.pool.config.hash_key)
        backend = self.pool.pick(request)
        if backend is None:
            self.give_up()
            return
        peer = scope["client"][0] if scope.get("client") else ""
        headers = upstream_request_headers(
            scope["headers"],
            peer=peer,
            scheme=scope.get("scheme", "http"),
            request_id=ctx.request_id,
            host=None if self.pool.config.preserve_host else backend.authority,
            fallback_host=backend.authority,
            peer_trusted=ctx.peer_trusted,
        )
        # Ours only: the mirror must be able to trust it.
        headers = [h for h in headers if h[0] != MIRRORED_FROM]
        headers.append(self._header)
        route = ctx.route
        target = ctx.target if route is None else route.upstream_path(ctx.target)
        method = ctx.method.encode("ascii")
        task = asyncio.get_running_loop().create_task(
            self._copy(backend, method, target, headers, body)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _copy(
        self,
        backend: Backend,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        pool = self.pool
        ok = False
        cancelled = False
        start = time.perf_counter()
        pool.start(backend)
        try:
            async with asyncio.timeout(pool.config.timeouts.total):
                response = await self.transport.send_raw(
                    origin_of(backend.url), method, target, headers, body, self._timeouts
                )
                try:
                    async for _ in response:
                        pass
                finally:
                    await response.aclose()
            ok = response.status < 500
        except asyncio.CancelledError:
            cancelled = True  # stopped (shutdown, reload): no failure of the backend's
            raise
        except (httpx.HTTPError, TimeoutError) as exc:
            logger.debug("mirror copy to pool %s failed: %r", pool.name, exc)
        except Exception:  # noqa: BLE001 - a copy must never reach the event loop's handler
            logger.exception("mirror copy to pool %s failed", pool.name)
        finally:
            self.in_flight -= 1
            pool.done(backend, time.perf_counter() - start, ok or cancelled)
            if not cancelled:
                self._count("sent" if ok else "failed")


class _Tee:
    """`receive` for the primary, keeping a copy of the body up to `limit` bytes; the copy is
    launched when the body ends, or given up when it grows over `limit`."""

    __slots__ = ("mirror", "scope", "_receive", "limit", "chunks", "size", "settled")

    def __init__(self, mirror: Mirror, scope: Scope, receive: Receive, limit: int) -> None:
        self.mirror = mirror
        self.scope = scope
        self._receive = receive
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.settled = False  # launched or given up

    async def receive(self) -> Message:
        message = await self._receive()
        if self.settled:
            return message
        if message["type"] != "http.request":  # the client left
            self.settled = True
            self.mirror.give_up()
            return message
        chunk: bytes = message.get("body", b"")
        self.size += len(chunk)
        if self.size > self.limit:
            self.settled = True
            self.chunks = []
            self.mirror.give_up()
            return message
        if chunk:
            self.chunks.append(chunk)
        if not message.get("more_body", False):
            self.settled = True
            self.mirror.launch(self.scope, b"".join(self.chunks))
        return message


def _body_size(headers: list[tuple[bytes, bytes]]) -> tuple[int, bool]:
    """(Content-Length, or 0; whether the body is chunked) of a request's headers."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value), False
            except ValueError:
                return 0, True  # the server refuses these; if not, read it as it comes
        if name == b"transfer-encoding":
            return 0, True
    return 0, False
