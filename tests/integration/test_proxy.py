"""SPEC section 3 through a real balancer in front of real uvicorn backends."""

from __future__ import annotations

import gzip
import json
import socket
import threading

import httpx
import pytest

from conftest import pool_config
from servers import raw_request, read_response, wait_until


@pytest.fixture
def three(start_backends, start_balancer):  # type: ignore[no-untyped-def]
    backends = start_backends(3)
    lb = start_balancer(pool_config([s.url for _, s in backends]))
    return backends, lb


def test_round_robin_over_three_backends(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    with httpx.Client(base_url=lb.url) as client:
        names = [client.get("/").json()["backend"] for _ in range(6)]
    assert names == ["b1", "b2", "b3", "b1", "b2", "b3"]


def test_method_raw_path_and_query_byte_for_byte(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    target = b"/a/../b/%2e%2E/c%zz//d;p?x=%20y&&z=%2F#"
    response = raw_request(
        lb.port, b"PATCH " + target[:-1] + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    assert response.status == 200
    seen = response.json()
    assert seen["method"] == "PATCH"
    assert seen["raw_path"] == "/a/../b/%2e%2E/c%zz//d;p"
    assert seen["query"] == "x=%20y&&z=%2F"


@pytest.mark.lb_protocol
def test_absolute_form_goes_to_a_backend_with_the_target_authority_as_host(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    response = raw_request(
        lb.port, b"GET http://other.example:1234/x?q=1 HTTP/1.1\r\nHost: ignored\r\n\r\n"
    )
    assert response.status == 200
    seen = response.json()
    assert seen["raw_path"] == "/x" and seen["query"] == "q=1"
    hosts = [v for k, v in seen["headers"] if k == "host"]
    assert hosts == ["other.example:1234"]


@pytest.mark.lb_protocol
def test_oversized_target_gets_414_and_nothing_is_forwarded(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    response = raw_request(
        lb.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", check_closed=True
    )
    assert response.status == 414
    assert response.json()["error"] == "bad_request"
    assert response.closed
    assert sum(b.count() for b, _ in backends) == 0


@pytest.mark.lb_protocol
def test_oversized_headers_get_431(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
    response = raw_request(lb.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert response.status == 431
    assert sum(b.count() for b, _ in backends) == 0


@pytest.mark.lb_protocol
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["cl-and-te", "two-content-lengths", "bad-chunk-size", "obs-folded-te"],
)
def test_ambiguous_framing_gets_400_and_close(three, request_bytes: bytes) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    response = raw_request(lb.port, request_bytes, check_closed=True)
    assert response.status == 400
    assert response.json()["error"] == "bad_request"
    assert response.closed
    assert sum(b.count("/smuggled") + b.count("/echo") for b, _ in backends) == 0


def test_sse_first_bytes_arrive_before_the_backend_finishes(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    for backend, _ in backends:
        backend.release.clear()
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        with client.stream("GET", "/sse") as response:
            chunks = response.iter_raw()
            first = next(chunks)
            assert first == b"data: first\n\n"
            for backend, _ in backends:
                backend.release.set()
            assert b"".join(chunks) == b"data: second\n\n"


def test_gzip_passes_through_byte_for_byte(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    expected = gzip.compress(b"hello gzip " * 100, mtime=0)
    with httpx.Client(base_url=lb.url) as client:
        with client.stream("GET", "/gzip", headers={"accept-encoding": "gzip"}) as response:
            raw = b"".join(response.iter_raw())
            assert response.headers["content-encoding"] == "gzip"
            assert response.headers["content-length"] == str(len(expected))
    assert raw == expected


def test_set_cookie_server_and_date_reach_the_client_once_each(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    response = raw_request(lb.port, b"GET /cookies HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.all("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert response.all("server") == ["backend-server"]
    assert response.all("date") == ["Mon, 01 Jan 2024 00:00:00 GMT"]


def test_hop_by_hop_headers_are_not_forwarded_either_way(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    response = raw_request(
        lb.port,
        b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"
        b"Keep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\nUpgrade: h2c\r\n"
        b"X-Keep: 1\r\n\r\n",
    )
    names = {k for k, _ in response.json()["headers"]}
    assert names.isdisjoint(
        {"connection", "x-drop", "keep-alive", "te", "proxy-connection", "upgrade"}
    )
    assert "x-keep" in names
    hop = raw_request(lb.port, b"GET /hop HTTP/1.1\r\nHost: x\r\n\r\n")
    assert hop.header("x-private") is None and hop.header("keep-alive") is None
    assert hop.all("x-request-id") != ["backend-id"] and len(hop.all("x-request-id")) == 1


def test_forwarded_headers_and_request_id(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    with httpx.Client(base_url=lb.url) as client:
        response = client.get(
            "/echo",
            headers={
                "x-forwarded-for": "203.0.113.9",
                "x-request-id": "abc-123",
                "host": "shop.example",
            },
        )
        seen = dict(response.json()["headers"])
        assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
        assert seen["x-forwarded-proto"] == "http"
        assert seen["x-forwarded-host"] == "shop.example"
        assert seen["host"] == "shop.example"
        assert seen["x-request-id"] == "abc-123"
        assert response.headers["x-request-id"] == "abc-123"
        bad = client.get("/echo", headers={"x-request-id": "no spaces allowed"})
        generated = bad.headers["x-request-id"]
        assert generated != "no spaces allowed" and len(generated) == 32
        assert dict(bad.json()["headers"])["x-request-id"] == generated


def test_backend_failing_mid_response_aborts_the_client_connection(start_balancer) -> None:  # type: ignore[no-untyped-def]
    # A raw backend that promises 1000 bytes, sends 10 and closes.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    lb = start_balancer(pool_config([f"http://127.0.0.1:{port}"]))
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.Client(base_url=lb.url) as client:
            client.get("/")
    thread.join(5)
    listener.close()


def test_websocket_echo_and_close_code(three) -> None:  # type: ignore[no-untyped-def]
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    backends, lb = three
    with connect(f"ws://127.0.0.1:{lb.port}/ws", subprotocols=["chat"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat"
        ws.send("hello")
        assert ws.recv(timeout=5).endswith(":hello")
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=5) == b"\x00\x01"
        ws.send("close:4321")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 4321


# lb's protocol calls the proxy back from connection_lost; under any other server (bare uvicorn,
# a mounting app) a watcher task listens on `receive`.
# `earlier`: requests answered on the connection first, so that under lb's protocol the hanging
# one runs in the connection's runner task, handed to it while it waited, and is cancelled there.
@pytest.mark.parametrize("earlier", [0, 2])
@pytest.mark.parametrize("http", ["lb", "httptools"])
def test_client_disconnect_cancels_upstream_and_later_requests_work(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, http, earlier
) -> None:
    backends = start_backends(3)
    config = pool_config([s.url for _, s in backends])
    lb = start_balancer(config) if http == "lb" else start_balancer(config, http="httptools")
    for backend, _ in backends:
        backend.release.clear()
        backend.cancelled.clear()
    sock = socket.create_connection(("127.0.0.1", lb.port), 10)
    for _ in range(earlier):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).status == 200
    sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
    # The hanging request itself, not the count of requests in flight: an earlier one may not
    # have left its backend's handler yet though its answer was read (a CI run closed the
    # client before /hang had reached any backend, which then had nothing to cancel).
    wait_until(lambda: any(r["path"] == "/hang" for b, _ in backends for r in b.seen))
    sock.close()
    # The balancer drops its upstream connection, so the backend's request is cancelled.
    wait_until(lambda: any(b.cancelled.is_set() for b, _ in backends))
    for backend, _ in backends:
        backend.release.set()
    with httpx.Client(base_url=lb.url) as client:
        assert all(client.get("/").status_code == 200 for _ in range(6))


def test_http10_request_without_host(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    response = raw_request(lb.port, b"GET /echo HTTP/1.0\r\n\r\n")
    assert response.status == 200
    hosts = [v for k, v in response.json()["headers"] if k == "host"]
    assert len(hosts) == 1 and hosts[0].startswith("127.0.0.1:")


def test_chunked_upload_is_forwarded(three) -> None:  # type: ignore[no-untyped-def]
    backends, lb = three
    sock = socket.create_connection(("127.0.0.1", lb.port), 10)
    sock.sendall(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    response = read_response(sock)
    sock.close()
    assert json.loads(response.body) == {"received": 11}
