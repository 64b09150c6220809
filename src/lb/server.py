"""Serving lb with uvicorn: the HTTP protocol lb runs on (its settings: `lb.serving`).

`HttpProtocol` is uvicorn's httptools protocol with the edge rules of SPEC section 3 that must hold
before any ASGI code runs: 414 for a request target over 8 KiB, 431 for a header section over
32 KiB, 400 with the connection closed for a request llhttp finds ambiguous (conflicting
Content-Length / Transfer-Encoding, bad chunk sizes, obs-folded headers), each with lb's JSON error
body; and absolute-form targets (`GET http://h/x`) turned into origin-form with Host = authority.
Requests run on `lb.cycle.Cycle` (one write per small response, a disconnect callback).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import urllib.parse
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lb import proxyproto
from lb.cycle import Cycle
from lb.proxy.errors import error_body, error_headers, public_detail
from lb.proxy.headers import new_request_id
from lb.serving import uvicorn_options as uvicorn_options  # its first home, for its importers
from lb.tls import ALPN

logger = logging.getLogger("lb.server")

MAX_HEADER_BYTES = 32 * 1024
MAX_TARGET_BYTES = 8 * 1024
HEADER_TIMEOUT = 10.0
SEND_TIMEOUT = 60.0
MAX_LOGGED_TARGET = 1024  # of a refused request's target, in its access-log line

# uri-host [":" port] (RFC 3986 reg-name or IP-literal), or empty (RFC 9112 3.2).
_HOST = re.compile(rb"[A-Za-z0-9._~%!$&'()*+,;=:\[\]-]*")

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


class _Reject(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with lb's request limits and absolute-form handling."""

    alpn_protocols = ALPN  # what uvicorn's own TLS context offers, when it makes one (gunicorn)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        loaded = getattr(self.app, "loaded", None)  # lb.app:app, once it has read its config
        if loaded is not None and loaded() is not None:
            self.app = loaded()
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
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._in_head = False  # between the first byte of a request and the end of its head
        self._idle_since: float | None = None  # the last response ended and no byte came since
        self._header_bytes = 0
        self._host_seen = False
        self._parsing = False
        self._deferred: list[tuple[Any, Any]] = []
        self._handshake: asyncio.Task[None] | None = None  # TLS after a PROXY header
        self._early: list[bytes] | None = None  # its first bytes, before `_connected`
        self._send_interim = self.send_interim  # bound once, handed to every cycle

    def send_interim(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """A 1xx response for the request being answered (requests on a connection are answered
        one at a time, so it is the current cycle's, unless that one has already started)."""
        cycle = self.cycle
        if isinstance(cycle, Cycle):
            cycle.send_interim(status, headers)

    # A request's head must arrive within header_timeout of the connection opening or of its first
    # byte: a slowloris client trickling header bytes would otherwise hold its connection forever
    # (uvicorn only times out idle keep-alive connections). The timer is armed when the connection
    # opens and after a read that leaves a head unfinished, never for a head that arrives whole
    # in one read (the common case: no timer per request).
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
        super().connection_made(transport)
        if client is not None:
            self.client = client  # from a PROXY header: the address everything downstream sees
        self._arm_head_timer()
        early, self._early = self._early, None
        if early:
            self.data_received(b"".join(early))

    def _keep_handshake(self, task: asyncio.Task[None]) -> None:
        # asyncio's start_tls hands the first decrypted bytes to this protocol as soon as the
        # handshake completes, before the awaiting task resumes to call `_connected`: hold them.
        self._handshake = task
        self._early = []

    def handle_websocket_upgrade(self) -> None:
        """uvicorn's, passing on the client address (a PROXY header's) to the WebSocket."""
        self.connections.discard(self)
        output = [self.scope["method"].encode(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.scope["headers"]:
            output += [name, b": ", value, b"\r\n"]
        output.append(b"\r\n")
        protocol = self.ws_protocol_class(  # type: ignore[call-arg, misc]
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        protocol.connection_made(self.transport)
        protocol.client = self.client  # type: ignore[union-attr]
        protocol.data_received(b"".join(output))
        self.transport.set_protocol(protocol)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        cycle = self.cycle
        if isinstance(cycle, Cycle) and not cycle.response_complete:
            cycle.lost()
        super().connection_lost(exc)

    # A client that stops reading a response (a "slow read") holds its upstream request and
    # connection for as long as it likes: flow control keeps the memory small, this bounds the
    # time. Armed only while writes are paused, so a steady reader costs nothing.
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
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
        """uvicorn's, with the keep-alive timer as described above."""
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

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None

    def _check_keep_alive(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None:
            return  # busy: the next response's end arms the timer again
        remaining = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if remaining > 0:
            self.timeout_keep_alive_task = self.loop.call_later(remaining, self._check_keep_alive)
        else:
            self.timeout_keep_alive_handler()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if getattr(self, "url", None) or self.headers:
            self._send_rejection(408, f"request head not received within {self.header_timeout}s")
        else:
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._host_seen = False
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_target_bytes:
            raise _Reject(414, f"request target longer than {self.max_target_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            raise _Reject(431, f"header section larger than {self.max_header_bytes} bytes")
        if len(name) == 4 and name.lower() == b"host":
            # RFC 9112 3.2: 400 for a second Host or an invalid one. Forwarded as they came, two
            # Hosts would let lb route by one while the backend reads the other.
            if self._host_seen:
                raise _Reject(400, "more than one Host header")
            if _HOST.fullmatch(value) is None:
                raise _Reject(400, "invalid Host header")
            self._host_seen = True
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        try:
            self._headers_complete()
        except httptools.HttpParserInvalidURLError:
            # A CONNECT authority or an absolute-form target llhttp let through but cannot
            # split (e.g. "http://h%0d%0a/"): a client error, said as one.
            raise _Reject(400, "invalid request target") from None

    def _headers_complete(self) -> None:
        url = self.url
        if not url.startswith(b"/") and b"://" in url[:12]:
            # Absolute-form (RFC 9112 3.2.2): the authority becomes Host, the path is forwarded.
            parsed = httptools.parse_url(url)
            authority = parsed.host or b""
            if b":" in authority:  # an IPv6 literal: llhttp hands it over without its brackets
                authority = b"[" + authority + b"]"
            if parsed.port:
                authority += b":%d" % parsed.port
            self.headers[:] = [(n, v) for n, v in self.headers if n != b"host"]
            self.headers.append((b"host", authority))
            target = parsed.path or b"/"
            if parsed.query:
                target += b"?" + parsed.query
            self.url = target
        self._in_head = False
        self._disarm_head_timer()
        self._start_cycle()

    def _start_cycle(self) -> None:
        """uvicorn's on_headers_complete, with lb's `Cycle` in place of its RequestResponseCycle."""
        http_version = self.parser.get_http_version()
        method = self.parser.get_method()
        self.scope["method"] = method.decode("ascii")
        if http_version != "1.1":
            self.scope["http_version"] = http_version
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        self.scope["path"] = self.root_path + path
        self.scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        self.scope["query_string"] = parsed_url.query or b""

        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency
            or len(self.tasks) >= self.limit_concurrency
        ):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        else:
            app = self.app

        existing_cycle = self.cycle
        self.cycle = Cycle(
            self.scope,
            self.transport,
            self.flow,
            self.logger,
            self.access_logger,
            self.access_log,
            self.server_state.default_headers,
            asyncio.Event(),
            self.expect_100_continue,
            http_version != "1.0" and self.parser.should_keep_alive(),
            self.on_response_complete,
            self.loop,
            self._send_interim,
        )
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(self.cycle, app)
        else:
            # Pipelined requests wait their turn.
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, app))

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if self._parsing:
            # Deferred until the whole packet has parsed: a framing error later in the same
            # packet (a bad chunk size after a valid head) must stop the request before anything
            # is forwarded.
            self._deferred.append((cycle, app))
        else:
            self._run(cycle, app)

    def _start_deferred(self) -> None:
        for cycle, app in self._deferred:
            self._run(cycle, app)
        self._deferred.clear()

    def _run(self, cycle: Cycle, app: Any) -> None:
        """uvicorn's _start_asgi_task, keeping the task on the cycle, which cancels it when the
        client leaves (see lb.cycle)."""
        if self.config.reset_contextvars:
            task = self.loop.create_task(cycle.run_asgi(app), context=contextvars.Context())
        else:
            task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        cycle.task = task

    def data_received(self, data: bytes) -> None:
        if self._early is not None:  # TLS after a PROXY header, not yet connected
            self._early.append(data)
            return
        self._unset_keepalive_if_required()
        self._parsing = True
        try:
            self.parser.feed_data(data)
            self._parsing = False
            if self._in_head:
                self._arm_head_timer()
            self._start_deferred()
        except httptools.HttpParserUpgrade:
            self._parsing = False
            self._start_deferred()
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            self._parsing = False
            self._deferred.clear()
            reject = exc.__context__ if isinstance(exc.__context__, _Reject) else None
            if reject is None and isinstance(exc.__cause__, _Reject):
                reject = exc.__cause__
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # A request already handed to the app sees its client disconnect; it must not
                # answer on a connection whose framing can no longer be trusted.
                if isinstance(cycle, Cycle):
                    cycle.lost()
                if cycle.response_started:
                    self.transport.close()
                    return
            # A request the app already has is logged by the app, not here as well.
            logged = cycle is not None and not cycle.response_complete
            if reject is not None:
                self._send_rejection(reject.status, reject.detail, log=not logged)
            else:
                self._send_rejection(400, f"invalid HTTP request: {exc}", log=not logged)

    def _send_rejection(self, status: int, detail: str, log: bool = True) -> None:
        request_id = new_request_id()
        # The body says only a fixed sentence (SPEC 3): the cause is here, with the request id.
        logger.warning(
            "rejected request from %s: %s (request_id=%s)", self.client, detail, request_id.decode()
        )
        full = getattr(self.app, "lb_full_errors", None)
        text = public_detail("bad_request", detail, full is not None and full())
        body = error_body("bad_request", text, request_id)
        head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
        for name, value in error_headers(body, request_id):
            head += b"%s: %s\r\n" % (name, value)
        head += b"connection: close\r\n\r\n"
        self.transport.write(head + body)
        self.transport.close()
        record = getattr(self.app, "lb_rejected", None) if log else None
        if record is not None:
            # The method is known once llhttp has passed the target (before, it reads as 0,
            # DELETE); a target that was too long is logged cut short.
            url: bytes = getattr(self, "url", b"")
            method = self.parser.get_method().decode("ascii", "replace") if url else ""
            peer = self.client[0] if self.client else ""
            record(peer, method, url[:MAX_LOGGED_TARGET], status, detail, request_id)
