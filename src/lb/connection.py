"""`Connection`: the connection side of lb's HTTP/1.1 server protocol (`lb.server.HttpProtocol`
adds the parsing): what uvicorn's `Server` hands a protocol (its `Config`, `ServerState` and the
lifespan state, used through the attributes every uvicorn release of lb's range has, with no
import from uvicorn), the PROXY protocol header (`lb.proxyproto`), keep-alive, the head and send
timeouts, flow control, graceful shutdown, and the tasks requests run in.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from typing import Any

import httptools

from lb import proxyproto
from lb.cycle import Cycle
from lb.edgerules import HEADER_TIMEOUT, MAX_HEADER_BYTES, MAX_TARGET_BYTES, SEND_TIMEOUT
from lb.httpwire import FlowControl, is_tls, local_address, remote_address
from lb.tls import ALPN

logger = logging.getLogger("lb.server")


class Connection(asyncio.Protocol):
    """One client connection, with the request being answered (`cycle`) and those pipelined
    behind it."""

    alpn_protocols = ALPN  # what uvicorn's own TLS context offers, when it makes one (gunicorn)

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any] | None = None,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app: Any = config.loaded_app
        loaded = getattr(self.app, "loaded", None)  # lb.app:app, once it has read its config
        if loaded is not None and loaded() is not None:
            self.app = loaded()
        self.loop = _loop or asyncio.get_event_loop()
        # uvicorn's logger names: its log config (and lb's JSON format) covers them.
        self.logger = logging.getLogger("uvicorn.error")
        self.access_logger = logging.getLogger("uvicorn.access")
        self.access_log = self.access_logger.hasHandlers()
        self.parser = httptools.HttpRequestParser(self)
        try:
            # Answer the first of pipelined requests sent with "Connection: close" too.
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        except AttributeError:  # httptools < 0.6.3
            pass
        self.ws_protocol_class: Any = getattr(config, "ws_protocol_class", None)
        self.root_path: str = config.root_path
        self.asgi_version: str = config.asgi_version
        self.limit_concurrency: int | None = config.limit_concurrency
        self.reset_contextvars: bool = getattr(config, "reset_contextvars", False)
        self.app_state = app_state if app_state is not None else {}
        self.timeout_keep_alive: float = config.timeout_keep_alive
        self.timeout_keep_alive_task: asyncio.TimerHandle | None = None
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks

        limits = getattr(self.app, "lb_limits", None)
        self.max_header_bytes: int = MAX_HEADER_BYTES
        self.max_target_bytes: int = MAX_TARGET_BYTES
        self.header_timeout: float = HEADER_TIMEOUT
        self.send_timeout: float = SEND_TIMEOUT
        if limits is not None:
            (
                self.max_header_bytes,
                self.max_target_bytes,
                self.header_timeout,
                self.send_timeout,
            ) = limits()

        # Per connection
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.flow: FlowControl = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.pipeline: deque[tuple[Cycle, Any]] = deque()
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._in_head = False  # between the first byte of a request and the end of its head
        self._idle_since: float | None = None  # the last response ended and no byte came since
        self._parsing = False
        self._deferred: list[tuple[Cycle, Any]] = []
        self._handshake: asyncio.Task[None] | None = None  # TLS after a PROXY header
        self._early: list[bytes] | None = None  # its first bytes, before `_connected`
        self.cycle: Cycle | None = None  # the request being answered
        self._runner: asyncio.Task[None] | None = None  # runs the requests (see `_run`)
        self._waiter: asyncio.Future[tuple[Cycle | None, Any]] | None = None  # it waits, idle

    # A request's head must arrive within header_timeout of the connection opening or of its first
    # byte: a slowloris client trickling header bytes would otherwise hold its connection forever.
    # The timer is armed when the connection opens and after a read that leaves a head unfinished,
    # never for a head that arrives whole in one read (the common case: no timer per request).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        hook = getattr(self.app, "lb_proxy_protocol", None)
        trusted = hook() if hook is not None else None
        if trusted is None:
            self._connected(transport, None)
            return
        # PROXY protocol: the header first (and TLS after it, when lb serve deferred it).
        tls = getattr(self.config, "lb_tls_after_proxy", None)
        proxyproto.accept(
            transport, trusted, self.header_timeout, tls, self._connected, self._keep_handshake
        )

    def _connected(self, transport: asyncio.Transport, client: tuple[str, int] | None) -> None:
        self.connections.add(self)
        self.transport = transport
        self.flow = FlowControl(transport)
        self.server = local_address(transport)
        # From a PROXY header: the address everything downstream sees.
        self.client = client if client is not None else remote_address(transport)
        self.scheme = "https" if is_tls(transport) else "http"
        self._arm_head_timer()
        early, self._early = self._early, None
        if early:
            self.data_received(b"".join(early))

    def _keep_handshake(self, task: asyncio.Task[None]) -> None:
        # asyncio's start_tls hands the first decrypted bytes to this protocol as soon as the
        # handshake completes, before the awaiting task resumes to call `_connected`: hold them.
        self._handshake = task
        self._early = []

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._disarm_head_timer()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        cycle = self.cycle
        if cycle is not None:
            if not cycle.response_complete:
                cycle.lost()
            cycle.wake()
        if self.flow is not None:
            self.flow.resume_writing()
        if exc is None and self.transport is not None:
            self.transport.close()
        self.parser = None  # type: ignore[assignment]
        self._stop_runner()

    def eof_received(self) -> None:
        pass

    def shutdown(self) -> None:
        """Called by uvicorn's Server to begin a graceful shutdown: close an idle connection,
        let a busy one finish its response and close after it."""
        if self.transport is None:  # still reading a PROXY header
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        else:
            self.cycle.keep_alive = False

    # A client that stops reading a response (a "slow read") holds its upstream request and
    # connection for as long as it likes: flow control keeps the memory small, this bounds the
    # time. Armed only while writes are paused, so a steady reader costs nothing.
    def pause_writing(self) -> None:
        self.flow.pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timed_out(self) -> None:
        self._send_timer = None
        logger.warning(
            "dropped %s: it took no response bytes for %ss", self.client, self.send_timeout
        )
        self.transport.abort()  # the request sees a disconnect and cancels its upstream side

    # uvicorn arms a keep-alive timer at the end of every response and cancels it on the next
    # request's first byte: a timer per request. Here the connection notes when it went idle, and
    # one timer per connection follows that, re-arming when it fires on a connection that was busy.
    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._check_keep_alive
            )

    def _check_keep_alive(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None:
            return  # busy: the next response's end arms the timer again
        remaining = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if remaining > 0:
            self.timeout_keep_alive_task = self.loop.call_later(remaining, self._check_keep_alive)
        elif not self.transport.is_closing():
            self.transport.close()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _start_asgi_task(self, cycle: Cycle, app: Any) -> None:
        if self._parsing:
            # Deferred until the whole packet has parsed: a framing error later in the same
            # packet (a bad chunk size after a valid head) must stop the request before anything
            # is forwarded.
            self._deferred.append((cycle, app))
        else:
            self._run(cycle, app)

    # A task per request costs more than the rest of setting the request up (asyncio registers
    # each in a weak set and runs a done callback at its end): a connection runs its requests in
    # one task of its own, the runner, which waits on a future between them. The runner is in
    # `tasks` (what limit_concurrency counts and shutdown waits for) only while it runs one.
    def _run(self, cycle: Cycle, app: Any) -> None:
        """Run the request in a task kept on the cycle, which cancels it when the client leaves
        (see lb.cycle): the connection's runner when it is idle, else a task of its own."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set_result((cycle, app))
            task = self._runner
            assert task is not None  # waiting runners are never without their task
        elif self.reset_contextvars:  # a fresh context per request, as uvicorn gives it
            task = self.loop.create_task(cycle.run_asgi(app), context=contextvars.Context())
            task.add_done_callback(self.tasks.discard)
        elif self._runner is None:
            task = self._runner = self.loop.create_task(self._serve(cycle, app))
        else:
            # The runner is still busy (pipelining, or work after its response): this one must
            # not wait for it.
            task = self.loop.create_task(cycle.run_asgi(app))
            task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        cycle.task = task

    async def _serve(self, cycle: Cycle | None, app: Any) -> None:
        """The runner: the connection's requests one after another, until it closes (or a
        request of it was cancelled: a cancelled task is not used again)."""
        task = self._runner
        tasks = self.tasks
        try:
            while cycle is not None:
                await cycle.run_asgi(app)
                tasks.discard(task)
                cycle = None  # not kept alive while idle
                if task is None or task.cancelling() or self.parser is None:
                    return
                waiter = self._waiter = self.loop.create_future()
                cycle, app = await waiter
        finally:
            tasks.discard(task)
            if self._runner is task:
                self._runner = None
                self._waiter = None

    def _stop_runner(self) -> None:
        """The connection is done (closed, or handed to a WebSocket protocol): an idle runner
        ends."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set_result((None, None))

    def _start_deferred(self) -> None:
        for cycle, app in self._deferred:
            self._run(cycle, app)
        self._deferred.clear()

    def _head_timed_out(self) -> None:
        """No whole request head within header_timeout: the parser's side answers it (408) or
        closes an idle connection."""
        raise NotImplementedError
