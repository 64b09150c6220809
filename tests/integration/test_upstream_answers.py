"""What real backends legally send, relayed right (SPEC section 3): 204, 304 and HEAD answers are
bodiless whatever their framing headers say, and interim 1xx responses reach an HTTP/1.1 client
before the final one. Each through a real balancer, with a raw client that then reuses its
connection."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httptools
import httpx
import pytest

from conftest import pool_config
from lb.app import LoadBalancer
from programs import program
from rawbackend import answer_each, ok
from servers import read_response

FAST = {"connect": "1s", "read": "2s", "pool": "1s"}

BODILESS = {
    "304-with-content-length": (
        b"GET",
        b'HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: "v1"\r\n\r\n',
    ),
    "204-with-content-length": (b"DELETE", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
    "204-chunked": (b"PUT", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"),
    "head-with-content-length": (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
    "head-chunked": (b"HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
}


def read_head(sock: socket.socket) -> bytes:
    """One response head, and nothing after it: a bodiless response must end there."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert rest == b""
    return head


def upstream_errors(url: str) -> float:
    text = httpx.get(url + "/_lb/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("lb_upstream_errors_total{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def lb_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Warnings about the traffic (not the start-up warning that the admin API asks no token)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and r.name.startswith(("lb", "uvicorn"))
        and not r.getMessage().startswith("the admin API asks no token")
    ]


@pytest.mark.lb_protocol
@pytest.mark.parametrize("case", BODILESS.values(), ids=BODILESS.keys())
def test_bodiless_answer_leaves_both_connections_usable(
    start_balancer: Any, raw_backend: Any, caplog: pytest.LogCaptureFixture, case: Any
) -> None:
    method, reply = case
    caplog.set_level(logging.WARNING)
    backend = raw_backend(answer_each(lambda conn, n: reply if n == 1 else ok(b"next")))
    lb = start_balancer(pool_config([backend.url], timeouts=FAST))
    with socket.create_connection(("127.0.0.1", lb.port), 10) as sock:
        sock.sendall(method + b' /first HTTP/1.1\r\nHost: x\r\nIf-None-Match: "v1"\r\n\r\n')
        head = read_head(sock)
        status = int(head.split(b" ", 2)[1])
        assert status == int(reply.split(b" ", 2)[1])
        if status == 204:  # a 204 never has Content-Length (RFC 9110 8.6): lb drops the backend's
            assert b"content-length" not in head.lower()
        # The client's keep-alive connection still works...
        sock.sendall(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        second = read_response(sock)
    assert (second.status, second.body) == (200, b"next")
    # ... and so did lb's upstream one: back in the pool, reused, nothing counted as failed.
    assert backend.connections == 1 and len(backend.heads) == 2
    assert upstream_errors(lb.url) == 0
    assert lb_warnings(caplog) == []


@pytest.mark.lb_protocol
def test_backend_304_to_a_conditional_request_through_uvicorn(
    start_backends: Any, start_balancer: Any
) -> None:
    """A real origin's 304 (uvicorn does not send Content-Length on it; the Backend app passes
    the validators it was given), then more requests on the same client connection."""
    ((app, server),) = start_backends(1)
    lb = start_balancer(pool_config([server.url], timeouts=FAST))
    path = '/cache/x?h=ETag:"v1"&h=Content-Length:5'
    with httpx.Client(base_url=lb.url, timeout=5) as client:
        assert client.get(path, headers={"if-none-match": '"v1"'}).status_code == 304
        assert client.get("/echo").json()["path"] == "/echo"
        assert client.get(path, headers={"if-none-match": '"v1"'}).status_code == 304
    assert upstream_errors(lb.url) == 0


# -- interim responses ----------------------------------------------------------------------------

EARLY_HINTS = (
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
)


def responses(sock: socket.socket, finals: int = 1) -> list[tuple[int, list[tuple[bytes, bytes]]]]:
    """Every response (interim ones included) until `finals` final ones have ended."""
    seen: list[tuple[int, list[tuple[bytes, bytes]]]] = []
    headers: list[tuple[bytes, bytes]] = []
    done = [0]

    class Callbacks:
        def on_message_begin(self) -> None:
            headers.clear()

        def on_header(self, name: bytes, value: bytes) -> None:
            headers.append((name.lower(), value))

        def on_headers_complete(self) -> None:
            seen.append((parser.get_status_code(), list(headers)))

        def on_message_complete(self) -> None:
            if parser.get_status_code() >= 200:
                done[0] += 1

    parser = httptools.HttpResponseParser(Callbacks())
    while done[0] < finals:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {seen}"
        parser.feed_data(chunk)
    return seen


@pytest.mark.lb_protocol
def test_103_early_hints_reach_an_http11_client_before_the_final_response(
    start_balancer: Any, raw_backend: Any
) -> None:
    backend = raw_backend(answer_each(lambda conn, n: EARLY_HINTS))
    lb = start_balancer(pool_config([backend.url], timeouts=FAST))
    with socket.create_connection(("127.0.0.1", lb.port), 10) as sock:
        for _ in range(2):  # and again on the same connection
            sock.sendall(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
            (hints, hint_headers), (final, _) = responses(sock)
            assert (hints, final) == (103, 200)
            assert hint_headers == [(b"link", b"</style.css>; rel=preload; as=style")]
    with socket.create_connection(("127.0.0.1", lb.port), 10) as sock:
        # RFC 9110 15.2: never a 1xx to an HTTP/1.0 client.
        sock.sendall(b"GET /page HTTP/1.0\r\nHost: x\r\n\r\n")
        assert [status for status, _ in responses(sock)] == [200]


def test_103_is_dropped_under_another_asgi_server(start_server: Any, raw_backend: Any) -> None:
    """Plain uvicorn (not `lb serve`'s protocol) has no way to send a 1xx: the final response
    still comes, whole."""
    backend = raw_backend(answer_each(lambda conn, n: EARLY_HINTS))
    server = start_server(LoadBalancer(pool_config([backend.url], timeouts=FAST)))
    response = httpx.get(server.url + "/page")
    assert (response.status_code, response.content) == (200, b"final")


def test_expect_100_continue_end_to_end(start_backends: Any, start_balancer: Any) -> None:
    """The client waits for 100 Continue before its body (curl does, for a second): lb's server
    answers it when the proxy starts reading the body, the backend's own 100 (lb forwards the
    Expect) is not relayed a second time, and the body reaches the backend exactly once."""
    ((app, server),) = start_backends(1)
    lb = start_balancer(pool_config([server.url], timeouts=FAST))
    body = b"x" * 100_000
    with socket.create_connection(("127.0.0.1", lb.port), 5) as sock:
        for n in range(2):
            sock.sendall(
                b"POST /expect/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                b"Expect: 100-continue\r\n\r\n" % (n, len(body))
            )
            # Nothing but the 100 until the body is sent: a deadlock would time out here.
            assert read_head(sock) == b"HTTP/1.1 100 Continue"
            sock.sendall(body)
            ((status, _),) = responses(sock)
            assert status == 200
    received = [r for r in app.seen if r["path"].startswith("/expect/")]
    assert [len(r["body"]) for r in received] == [len(body)] * 2
    assert all(json.dumps(r).count("100-continue") == 1 for r in received)  # forwarded once


def test_curl_with_expect_100_continue(
    start_backends: Any, start_balancer: Any, tmp_path: Path
) -> None:
    """curl sends its body once the 100 comes, or after --expect100-timeout without one: a
    quick answer shows lb said 100 Continue rather than leaving curl to give up waiting."""
    ((app, server),) = start_backends(1)
    lb = start_balancer(pool_config([server.url], timeouts=FAST))
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"c" * 200_000)
    started = time.monotonic()
    result = subprocess.run(
        [program("curl"), "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--expect100-timeout",
         "10", "-H", "Expect: 100-continue", "--data-binary", f"@{upload}", lb.url + "/curl"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.stdout == "200", result.stderr
    assert time.monotonic() - started < 5
    assert [len(r["body"]) for r in app.seen if r["path"] == "/curl"] == [200_000]
