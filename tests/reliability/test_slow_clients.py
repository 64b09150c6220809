"""Slow and silent clients time out without starving anybody else."""

from __future__ import annotations

import socket
import time

import httpx

from conftest import pool_config
from servers import read_response


def test_slowloris_head_gets_408_and_others_are_served(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    config = pool_config([server.url])
    config["server"] = {"header_timeout": "500ms"}
    lb = start_balancer(config)
    slow = [socket.create_connection(("127.0.0.1", lb.port), 10) for _ in range(20)]
    for sock in slow:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    # While they trickle, other clients are served at once.
    with httpx.Client(base_url=lb.url, timeout=5) as client:
        assert all(client.get("/echo").status_code == 200 for _ in range(10))
    started = time.monotonic()
    for sock in slow:
        sock.sendall(b"a")  # still trickling: the deadline counts from the first byte
    responses = [read_response(sock, check_closed=True) for sock in slow]
    assert time.monotonic() - started < 5
    assert {r.status for r in responses} == {408}
    assert all(r.closed for r in responses)
    assert backend.count() == 10
    for sock in slow:
        sock.close()


def test_silent_connection_is_closed(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    config = pool_config([server.url])
    config["server"] = {"header_timeout": "300ms"}
    lb = start_balancer(config)
    with socket.create_connection(("127.0.0.1", lb.port), 10) as sock:
        assert sock.recv(1) == b""  # closed by the balancer, nothing sent
