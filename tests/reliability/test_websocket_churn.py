"""10,000 WebSocket sessions opened and closed one after another through an `lb serve` process:
its open file descriptors, its memory and the pool's active count come back to where they were.

The client speaks the protocol on a raw socket (a handshake, a masked frame, a close), so the
test's own cost per session stays small next to the balancer's; three endings take turns: the
client closes, the backend closes, or the client just drops the connection.
"""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest

from conftest import pool_config
from servers import wait_until

SESSIONS = int(os.environ.get("LB_WS_SESSIONS", "10000"))

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
ZERO_MASK = b"\x00\x00\x00\x00"  # any mask key is valid; zero leaves the payload readable


def frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + ZERO_MASK + payload


CLIENT_CLOSE = frame(0x8, (1000).to_bytes(2, "big"))


def read_until_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def session(port: int, ending: int) -> None:
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(HANDSHAKE)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "closed during the handshake"
            data += chunk
        assert data.startswith(b"HTTP/1.1 101"), data
        rest = data.partition(b"\r\n\r\n")[2]
        if ending == 0:  # the client closes
            sock.sendall(CLIENT_CLOSE)
            rest += read_until_eof(sock)
            assert rest[:1] == b"\x88", rest
        elif ending == 1:  # the backend closes, with a code the client must see
            sock.sendall(frame(0x1, b"close:4001"))
            while len(rest) < 4:
                rest += sock.recv(65536)
            assert rest[:1] == b"\x88" and rest[2:4] == (4001).to_bytes(2, "big"), rest
            sock.sendall(CLIENT_CLOSE)
            read_until_eof(sock)
        # else: the client vanishes without a close frame.


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def active_requests(url: str) -> int:
    status = httpx.get(url + "/_lb/status", timeout=5).json()
    return sum(b["active_requests"] for p in status["pools"].values() for b in p["backends"])


@pytest.mark.slow
def test_sequential_websocket_sessions_leak_nothing(start_backends, lb_process) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    lb = lb_process(pool_config([server.url]))
    pid = lb.process.pid
    for i in range(300):  # warm up: lazy imports, allocator arenas, the first connections
        session(lb.port, i % 3)
    wait_until(lambda: active_requests(lb.url) == 0)
    fds, rss = fd_count(pid), lb.rss_kib()

    started = time.monotonic()
    for i in range(SESSIONS):
        session(lb.port, i % 3)
    elapsed = time.monotonic() - started

    # Sessions the client dropped end a moment later on the balancer's side.
    wait_until(lambda: active_requests(lb.url) == 0)
    wait_until(lambda: fd_count(pid) <= fds, timeout=10)
    grown = lb.rss_kib() - rss
    print(f"{SESSIONS} sessions in {elapsed:.1f}s, fds {fds}, RSS {rss} KiB (+{grown} KiB)")
    assert grown < 10 * 1024, f"RSS grew by {grown} KiB over {SESSIONS} sessions"
    assert "Traceback" not in lb.output()
