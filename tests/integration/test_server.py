"""lb's HTTP protocol (lb.server, lb.cycle) on real sockets: keep-alive, and the response writes."""

from __future__ import annotations

import socket
import time

from conftest import pool_config
from rawbackend import answer_each
from servers import read_response


def test_keep_alive_closes_idle_connections_only(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((_, server),) = start_backends(1)
    lb = start_balancer(pool_config([server.url]), timeout_keep_alive=0.5)
    with socket.create_connection(("127.0.0.1", lb.port), 10) as sock:
        # Busy for three times the timeout, never idle for as long as it: the connection stays.
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).status == 200
            time.sleep(0.2)
        # Idle: closed (about 0.5 s later).
        sock.settimeout(5)
        assert sock.recv(1) == b""


def test_head_and_body_of_a_small_response_leave_in_one_segment(  # type: ignore[no-untyped-def]
    start_backends, start_balancer
) -> None:
    ((_, server),) = start_backends(1)
    lb = start_balancer(pool_config([server.url]))
    with socket.create_connection(("127.0.0.1", lb.port), 10) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)  # let everything the balancer sends arrive
        # One write on loopback is one segment: a single recv then has the whole response.
        data = sock.recv(1 << 20)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        assert len(body) == length


def test_a_status_code_outside_100_599_is_a_502(start_balancer, raw_backend) -> None:  # type: ignore[no-untyped-def]
    """SPEC 3: a status outside 100-599 (the suite http-tests/cache-tests sends 999) is a malformed
    answer: 502 bad_gateway with lb's JSON body, and the client's connection stays usable."""
    backend = raw_backend(
        answer_each(lambda _c, _r: b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok")
    )
    lb = start_balancer(pool_config([backend.url]))
    host, port = lb.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"GET /odd HTTP/1.1\r\nhost: x\r\n\r\n")
        response = read_response(sock)
    assert response.status == 502 and b'"bad_gateway"' in response.body
