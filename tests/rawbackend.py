"""Scripted TCP backends for fault tests: Envoy's "fake upstream", in a thread per connection.

A `RawBackend` listens on a free loopback port and runs `script(conn, backend)` on every
connection it accepts, so a test can make a backend misbehave in ways no HTTP framework allows:
answer garbage, reset, stall, or die halfway. `counting` is a small but real HTTP/1.1 server
(llhttp parses every request) that counts requests exactly, for smuggling tests.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import httptools

Script = Callable[[socket.socket, "RawBackend"], None]


class RawBackend:
    """A listening socket whose connections each run `script` in a daemon thread."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port: int = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.connections = 0
        self.heads: list[tuple[int, bytes]] = []  # (connection number, request head)
        self.requests: list[dict[str, Any]] = []  # parsed by `counting`
        self.closed_by_peer = 0  # connections the balancer closed (EOF seen by a script)
        self.stopping = threading.Event()
        self._open: list[socket.socket] = []
        self._local = threading.local()  # the connection number of the script's own thread
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> RawBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> RawBackend:
        return self.__enter__()

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.lock:
            conns, self._open = self._open, []
        for conn in conns:
            # shutdown() first: close() alone leaves a socket that another thread is reading
            # from open, and the balancer would never see this backend go away.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
                self._open.append(conn)
            threading.Thread(target=self._run, args=(conn, number), daemon=True).start()

    def _run(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(30)
        self._local.number = number
        with contextlib.suppress(OSError), conn:
            self.script(conn, self)

    def read_head(self, conn: socket.socket) -> bytes | None:
        """The next request head on `conn` (recorded), or None once the peer closed."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                with self.lock:
                    self.closed_by_peer += 1
                return None
            buf += chunk
        head = buf.partition(b"\r\n\r\n")[0]
        with self.lock:
            self.heads.append((self.connection_number(), head))
        return head

    def connection_number(self) -> int:
        """The number (from 1, in accept order) of the connection this script thread serves."""
        number: int = self._local.number
        return number

    def wait_closed(self, conn: socket.socket) -> None:
        """Block until the balancer closes `conn` (or the backend stops)."""
        while not self.stopping.is_set():
            try:
                if not conn.recv(65536):
                    with self.lock:
                        self.closed_by_peer += 1
                    return
            except TimeoutError:
                continue


def reset(conn: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER on, timeout 0)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def ok(body: bytes = b"ok") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def answer_each(responses: Callable[[int, int], bytes | None]) -> Script:
    """Reply to every request head with `responses(connection number, request number)`; None
    from it means: stay silent until the balancer closes the connection."""

    def script(conn: socket.socket, backend: RawBackend) -> None:
        index = 0
        while backend.read_head(conn) is not None:
            index += 1
            reply = responses(backend.connection_number(), index)
            if reply is None:
                backend.wait_closed(conn)
                return
            conn.sendall(reply)

    return script


def request_parser() -> tuple[httptools.HttpRequestParser, list[dict[str, Any]]]:
    """A strict llhttp request parser that appends each complete request to the list it returns
    with it, as {"method", "url", "headers" (names lower-case), "body"}."""
    request: dict[str, Any] = {}
    done: list[dict[str, Any]] = []

    class Callbacks:
        def on_message_begin(self) -> None:
            request.clear()
            request.update(headers=[], body=b"")

        def on_url(self, url: bytes) -> None:
            request["url"] = request.get("url", b"") + url

        def on_header(self, name: bytes, value: bytes) -> None:
            request["headers"].append((name.lower(), value))

        def on_body(self, body: bytes) -> None:
            request["body"] += body

        def on_message_complete(self) -> None:
            request["method"] = parser.get_method()
            done.append(dict(request))

    parser = httptools.HttpRequestParser(Callbacks())
    return parser, done


def counting(conn: socket.socket, backend: RawBackend) -> None:
    """A strict HTTP/1.1 keep-alive server: every request llhttp parses is recorded and answered
    200 with its sequence number and target (`request 3 /x`), so a test can count exactly what
    reached the backend and tell whose answer a client got."""
    parser, done = request_parser()
    while True:
        data = conn.recv(65536)
        if not data:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserError:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        for item in done:
            with backend.lock:
                backend.requests.append(item)
                number = len(backend.requests)
            conn.sendall(ok(b"request %d %s" % (number, item.get("url", b""))))
        done.clear()


def streaming_forever(conn: socket.socket, backend: RawBackend) -> None:
    """Promise a long body and trickle it until stopped: for "killed mid-response"."""
    if backend.read_head(conn) is None:
        return
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
    while not backend.stopping.is_set():
        conn.sendall(b"x" * 1024)
        time.sleep(0.01)


def closes_when_reused(conn: socket.socket, backend: RawBackend) -> None:
    """Answer the first request on each connection (recorded as `counting` does), then close the
    connection, unread, as soon as the next one starts: a backend whose keep-alive timeout ran
    out just as lb sent a request on the connection."""
    parser, done = request_parser()
    while not done:
        data = conn.recv(65536)
        if not data:
            return
        parser.feed_data(data)
    with backend.lock:
        backend.requests.append(done[0])
    conn.sendall(ok())
    if conn.recv(65536):
        reset(conn)
    else:
        with backend.lock:
            backend.closed_by_peer += 1
