"""Clients that ask for a large response and then stop reading it (the "slow read" cousin of
slowloris): flow control keeps the balancer's memory per client small whatever the size of the
response, other clients are served as usual, and after `server.send_timeout` without progress
the stalled connections are dropped, which frees their upstream requests too."""

from __future__ import annotations

import socket
import time

import httpx

from conftest import pool_config
from servers import wait_until

READERS = 20
SIZE = 100_000_000  # each: 2 GB in all if anything buffered whole responses


def active_requests(url: str) -> int:
    status = httpx.get(url + "/_lb/status", timeout=5).json()
    return sum(b["active_requests"] for p in status["pools"].values() for b in p["backends"])


def stalled_reader(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /big?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % SIZE)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """Drain what the kernel holds; True once the balancer has closed (FIN or RST)."""
    sock.settimeout(0.2)
    try:
        while chunk := sock.recv(1 << 20):
            del chunk
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_stalled_readers_cost_little_starve_nobody_and_are_dropped(
    start_backends, lb_process
) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    config = pool_config([server.url])
    config["server"] = {"send_timeout": "2s"}
    lb = lb_process(config)
    baseline = lb.rss_kib()
    readers = [stalled_reader(lb.port) for _ in range(READERS)]
    try:
        wait_until(lambda: active_requests(lb.url) == READERS)
        time.sleep(0.5)  # let every buffer on the way fill up
        grown = lb.rss_kib() - baseline
        with httpx.Client(base_url=lb.url, timeout=5) as client:
            started = time.monotonic()
            assert all(client.get("/echo").status_code == 200 for _ in range(20))
            assert time.monotonic() - started < 2
        # About 1.7 MB each here (buffers on the way: lb's, the event loop's); 2 GB unbounded.
        assert grown < 5 * 1024 * READERS, f"{grown} KiB for {READERS} stalled readers"
        # No progress for send_timeout: the balancer drops them and their upstream requests.
        wait_until(lambda: active_requests(lb.url) == 0, timeout=15)
        wait_until(lambda: backend.in_flight == 0, timeout=10)
        assert all(closed_by_peer(sock) for sock in readers)
    finally:
        for sock in readers:
            sock.close()
    print(f"{READERS} stalled readers of {SIZE} bytes: +{grown} KiB RSS")
