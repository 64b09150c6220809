"""`HttpProtocol`: lb's HTTP/1.1 server protocol, which uvicorn runs through its public `http=`
setting (`lb.serving.uvicorn_options`; gunicorn's worker, the admin socket). Its settings are
`lb.serving`'s; the connection side (PROXY header, keep-alive, timeouts, flow control, graceful
shutdown) is `lb.connection.Connection`.

It parses with httptools and behaves as uvicorn's httptools protocol (pipelining,
Expect: 100-continue, WebSocket upgrades handed to uvicorn's configured WebSocket protocol), plus
the edge rules of SPEC section 3 that must hold before any ASGI code runs (`lb.edgerules`): 414 for
a request target over 8 KiB, 431 for a header section over 32 KiB, 400 with the connection closed
for a request llhttp finds ambiguous (conflicting Content-Length / Transfer-Encoding, bad chunk
sizes, obs-folded headers), 408 for a head that does not arrive in time, each with lb's JSON error
body; and absolute-form targets turned into origin-form. Requests run on `lb.cycle.Cycle`. Nothing
here imports uvicorn (tests/unit/test_no_private_uvicorn.py).
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

import httptools

from lb.connection import Connection
from lb.cycle import Cycle
from lb.edgerules import MAX_LOGGED_TARGET, Reject, check_host, origin_form, refusal
from lb.httpwire import HIGH_WATER_LIMIT, service_unavailable
from lb.proxy.headers import new_request_id
from lb.serving import uvicorn_options as uvicorn_options  # its first home, for its importers

logger = logging.getLogger("lb.server")


class HttpProtocol(Connection):
    """Requests parsed off a connection, refused or run on the app, one at a time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._send_interim = self.send_interim  # bound once, handed to every cycle
        self.scope: dict[str, Any] = {}
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_100_continue = False
        self._header_bytes = 0
        self._host_seen = False

    def send_interim(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """A 1xx response for the request being answered (requests on a connection are answered
        one at a time, so it is the current cycle's, unless that one has already started)."""
        if self.cycle is not None:
            self.cycle.send_interim(status, headers)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.url or self.headers:
            self._send_rejection(408, f"request head not received within {self.header_timeout}s")
        else:
            self.transport.close()

    # -- llhttp's callbacks --

    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._header_bytes = 0
        self._host_seen = False
        self._in_head = True
        self.scope = {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.max_target_bytes:
            raise Reject(414, f"request target longer than {self.max_target_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            raise Reject(431, f"header section larger than {self.max_header_bytes} bytes")
        name = name.lower()
        if name == b"host":
            check_host(value, self._host_seen)
            self._host_seen = True
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.url = origin_form(self.url, self.headers)
        self._in_head = False
        self._disarm_head_timer()
        try:
            self._start_cycle()
        except httptools.HttpParserInvalidURLError:
            # A CONNECT authority llhttp let through but cannot split: a client error.
            raise Reject(400, "invalid request target") from None

    def _start_cycle(self) -> None:
        parser = self.parser
        http_version = parser.get_http_version()
        scope = self.scope
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed_url.query or b""

        app = self.app
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")

        existing = self.cycle
        self.cycle = Cycle(
            scope,
            self.transport,
            self.flow,
            self.logger,
            self.access_logger,
            self.access_log,
            self.server_state.default_headers,
            self.expect_100_continue,
            http_version != "1.0" and parser.should_keep_alive(),
            self.on_response_complete,
            self.loop,
            self._send_interim,
        )
        if existing is None or existing.response_complete:
            self._start_asgi_task(self.cycle, app)
        else:
            # Pipelined requests wait their turn.
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, app))

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self._upgrading():
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self._upgrading():
            return
        cycle.more_body = False
        cycle.wake()

    def data_received(self, data: bytes) -> None:
        if self._early is not None:  # TLS after a PROXY header, not yet connected
            self._early.append(data)
            return
        self._idle_since = None
        self._parsing = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._parsing = False
            self._start_deferred()
            if self._should_upgrade():
                self._upgrade_to_websocket()
            else:
                self.logger.warning("Unsupported upgrade request.")
        except httptools.HttpParserError as exc:
            self._parsing = False
            self._deferred.clear()
            self._refuse(exc)
        else:
            self._parsing = False
            if self._in_head:
                self._arm_head_timer()
            self._start_deferred()

    def _refuse(self, exc: httptools.HttpParserError) -> None:
        reject = exc.__context__ if isinstance(exc.__context__, Reject) else None
        if reject is None and isinstance(exc.__cause__, Reject):
            reject = exc.__cause__
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A request already handed to the app sees its client disconnect; it must not
            # answer on a connection whose framing can no longer be trusted.
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
        self.transport.write(refusal(status, detail, request_id, full is not None and full()))
        self.transport.close()
        record = getattr(self.app, "lb_rejected", None) if log else None
        if record is not None:
            # The method is known once llhttp has passed the target (before, it reads as 0,
            # DELETE); a target that was too long is logged cut short.
            url = self.url
            method = self.parser.get_method().decode("ascii", "replace") if url else ""
            peer = self.client[0] if self.client else ""
            record(peer, method, url[:MAX_LOGGED_TARGET], status, detail, request_id)

    # -- WebSocket upgrades: handed to uvicorn's WebSocket protocol (`ws=` setting) --

    def _should_upgrade(self) -> bool:
        if self.ws_protocol_class is None:
            return False
        connection: list[bytes] = []
        upgrade = None
        for name, value in self.headers:
            if name == b"connection":
                connection = [token.lower().strip() for token in value.split(b",")]
            elif name == b"upgrade":
                upgrade = value.lower()
        return b"upgrade" in connection and upgrade == b"websocket"

    def _upgrading(self) -> bool:
        return bool(self.parser.should_upgrade()) and self._should_upgrade()

    def _upgrade_to_websocket(self) -> None:
        """Replay the head to a WebSocket protocol, passing on the client address (a PROXY
        header's), and give it the transport."""
        self.connections.discard(self)
        self._disarm_head_timer()
        self._stop_runner()
        output = [self.scope["method"].encode(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            output += [name, b": ", value, b"\r\n"]
        output.append(b"\r\n")
        protocol = self.ws_protocol_class(
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        protocol.connection_made(self.transport)
        protocol.client = self.client
        protocol.data_received(b"".join(output))
        self.transport.set_protocol(protocol)
