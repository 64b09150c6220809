"""Backends that die, stall, reset or talk nonsense: the client always gets a clean error or a
visibly incomplete response, never a hang, and nobody else's request is touched."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httptools
import httpx
import pytest

from conftest import pool_config
from rawbackend import RawBackend, answer_each, ok, reset
from servers import raw_request, wait_until

TESTS = str(Path(__file__).resolve().parent.parent)
FAST = {"connect": "1s", "read": "300ms", "pool": "1s"}


def fast_pool(urls: list[str], **pool: object) -> dict[str, object]:
    return pool_config(urls, timeouts=FAST, **pool)


def idle_transport(lb) -> bool:  # type: ignore[no-untyped-def]
    return "active: 0," in repr(lb.app.transport)


# -- a backend process killed while it streams ---------------------------------------------------

KILLABLE = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from rawbackend import RawBackend, streaming_forever
backend = RawBackend(streaming_forever).start()
print(backend.port, flush=True)
threading.Event().wait()
"""


def test_backend_killed_mid_response(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    process = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, TESTS], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        ((other, other_server),) = start_backends(1)
        config = fast_pool([f"http://127.0.0.1:{port}"])
        config["pools"]["other"] = {"backends": [other_server.url]}  # type: ignore[index]
        config["routes"] = [
            {"path_prefix": "/other", "pool": "other"},
            {"path_prefix": "/", "pool": "web"},
        ]
        lb = start_balancer(config)
        with (
            httpx.Client(base_url=lb.url, timeout=10) as client,
            concurrent.futures.ThreadPoolExecutor(8) as pool,
        ):
            with client.stream("GET", "/download") as response:
                chunks = response.iter_raw()
                received = len(next(chunks))
                # Requests to the other pool run while the download dies.
                others = [pool.submit(client.get, "/other/echo") for _ in range(40)]
                os.kill(process.pid, signal.SIGKILL)
                started = time.monotonic()
                with pytest.raises(httpx.RemoteProtocolError):
                    for chunk in chunks:
                        received += len(chunk)
                assert time.monotonic() - started < 5, "the client waited on a dead backend"
            assert 0 < received < 100_000_000
            assert [f.result().status_code for f in others] == [200] * 40
            # The dead backend now refuses: a clean 502, at once.
            dead = client.get("/download")
            assert dead.status_code == 502 and dead.json()["error"] == "bad_gateway"
            assert dead.json()["detail"] == "the backend did not send a valid answer"
        assert other.count() == 40
        wait_until(lambda: idle_transport(lb))
    finally:
        process.kill()
        process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


def test_a_killed_backend_is_failed_over(start_backends, start_balancer, raw_backend) -> None:  # type: ignore[no-untyped-def]
    """Every request after the kill still succeeds: the refusal is retried on the live one."""
    ((live, live_server),) = start_backends(1)
    doomed = raw_backend(answer_each(lambda conn, n: ok(b"doomed")))
    # Without health checks the dead one keeps its turn, so every other request needs a retry:
    # a budget that allows them all (the default 20% is for real outages, not this test).
    retries = {"attempts": 2, "retry_on": ["connect_error"], "budget_percent": 100}
    lb = start_balancer(fast_pool([doomed.url, live_server.url], retries=retries))
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        assert {client.get("/echo").status_code for _ in range(4)} == {200}
        doomed.stop()
        statuses = [client.get("/echo").status_code for _ in range(20)]
    assert statuses == [200] * 20


# -- a backend that accepts and says nothing -----------------------------------------------------


def test_backend_that_never_answers_gets_504_within_the_read_timeout(
    start_balancer, raw_backend
) -> None:  # type: ignore[no-untyped-def]
    silent = raw_backend(answer_each(lambda conn, n: None))
    lb = start_balancer(fast_pool([silent.url]))
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        started = time.monotonic()
        response = client.get("/slow")
        elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"] == "timeout"
    assert 0.25 < elapsed < 3
    # The balancer hangs up on the silent backend rather than keep the connection.
    wait_until(lambda: silent.closed_by_peer == 1)
    wait_until(lambda: idle_transport(lb))


# -- resets --------------------------------------------------------------------------------------


def reset_before_head(conn: socket.socket, backend: RawBackend) -> None:
    if backend.read_head(conn) is not None:
        reset(conn)


def reset_after_head(conn: socket.socket, backend: RawBackend) -> None:
    if backend.read_head(conn) is not None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        time.sleep(0.05)
        reset(conn)


def test_reset_before_the_head_gets_502(start_balancer, raw_backend) -> None:  # type: ignore[no-untyped-def]
    backend = raw_backend(reset_before_head)
    lb = start_balancer(fast_pool([backend.url]))
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        response = client.get("/x")
    assert response.status_code == 502
    assert response.json()["error"] == "bad_gateway"
    assert len(backend.heads) == 1  # a GET with a body-less request is not blindly resent
    wait_until(lambda: idle_transport(lb))


def test_reset_after_the_head_aborts_the_client_response(start_balancer, raw_backend) -> None:  # type: ignore[no-untyped-def]
    backend = raw_backend(reset_after_head)
    lb = start_balancer(fast_pool([backend.url]))
    response = raw_request(lb.port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == 200
    assert response.body == b"0123456789"  # short of the 100 promised, then closed
    assert response.header("content-length") == "100"
    wait_until(lambda: idle_transport(lb))


# -- malformed answers ---------------------------------------------------------------------------

MALFORMED = {
    "garbage-status-line": b"HELLO THERE\r\n\r\n",
    "bad-status-code": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    "oversized-head": b"HTTP/1.1 200 OK\r\n"
    + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(80))
    + b"Content-Length: 0\r\n\r\n",
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "two-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
    b"hello!",
    "header-without-colon": b"HTTP/1.1 200 OK\r\nNoColonHere\r\nContent-Length: 0\r\n\r\n",
    "nul-in-header": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    # SPEC section 3: a status outside 100-599 is a 502, not a traceback and an empty reply.
    "status-999": b"HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\nok",
    "status-600": b"HTTP/1.1 600 Weird\r\nContent-Length: 2\r\n\r\nok",
    "status-099": b"HTTP/1.1 099 Weird\r\nContent-Length: 2\r\n\r\nok",
    "te-in-http10": b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "chunked-twice": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "chunked-not-last": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nok",
    "bare-cr": b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok",
    "bare-lf": b"HTTP/1.1 200 OK\nX-A: b\nContent-Length: 2\n\nok",
    "http-2-status-line": b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "interim-then-garbage": b"HTTP/1.1 103 Early Hints\r\n\r\nNOT HTTP\r\n\r\n",
}


@pytest.mark.parametrize("reply", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_response_gets_502_and_the_connection_is_not_reused(
    start_balancer, raw_backend, caplog, reply: bytes
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.ERROR)
    backend = raw_backend(answer_each(lambda conn, n: reply if conn == 1 else ok()))
    lb = start_balancer(fast_pool([backend.url]))
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        bad = client.get("/bad")
        good = client.get("/good")
    assert bad.status_code == 502, bad.content
    assert bad.json()["error"] == "bad_gateway"
    assert good.status_code == 200 and good.content == b"ok"
    # The second request went out on a new connection, never after the nonsense on the first.
    assert [conn for conn, _ in backend.heads] == [1, 2]
    wait_until(lambda: backend.closed_by_peer >= 1 or backend.connections == 2)
    assert not [r for r in caplog.records if r.exc_info], "a traceback in the log"


BROKEN_BODIES = {
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    "chunk-longer-than-its-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nhello\r\n0\r\n\r\n",
    "extra-bytes-after-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
}


@pytest.mark.parametrize("reply", BROKEN_BODIES.values(), ids=BROKEN_BODIES.keys())
def test_broken_body_never_ends_cleanly_and_the_connection_is_dropped(
    start_balancer, raw_backend, reply: bytes
) -> None:  # type: ignore[no-untyped-def]
    backend = raw_backend(answer_each(lambda conn, n: reply if conn == 1 else ok(b"fresh")))
    lb = start_balancer(fast_pool([backend.url]))
    status, body, complete = read_one_response(lb.port, "/bad")
    if b"smuggled" in reply:
        # The first response was whole and valid; the bytes after it must go nowhere.
        assert (status, body, complete) == (200, b"hi", True)
    else:
        # Either lb saw the break before the head went out (502), or the client sees a cut-off
        # response; never a complete response built from a broken one.
        assert status == 502 or not complete, (status, body)
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        assert [client.get("/good").content for _ in range(3)] == [b"fresh"] * 3
    assert all(conn != 1 for conn, head in backend.heads if b"/good" in head)


def read_one_response(port: int, path: str) -> tuple[int, bytes, bool]:
    """(status, body, whether the response was complete) of one request on a new connection,
    read with llhttp until the response ends or the balancer closes the connection."""
    state: dict[str, object] = {"body": b"", "complete": False}

    class Callbacks:
        def on_body(self, body: bytes) -> None:
            state["body"] += body  # type: ignore[operator]

        def on_message_complete(self) -> None:
            state["complete"] = True

    parser = httptools.HttpResponseParser(Callbacks())
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        while not state["complete"]:
            chunk = sock.recv(65536)
            if not chunk:
                break
            parser.feed_data(chunk)
    return parser.get_status_code(), state["body"], state["complete"]  # type: ignore[return-value]


# -- slow headers versus slow bodies -------------------------------------------------------------


def trickle(delay_head: float, pieces: int, gap: float):  # type: ignore[no-untyped-def]
    def script(conn: socket.socket, backend: RawBackend) -> None:
        if backend.read_head(conn) is None:
            return
        time.sleep(delay_head)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % pieces)
        for _ in range(pieces):
            time.sleep(gap)
            conn.sendall(b"x")
        backend.wait_closed(conn)

    return script


def test_read_timeout_is_per_read_so_a_slow_body_arrives(start_balancer, raw_backend) -> None:  # type: ignore[no-untyped-def]
    # 5 pieces 300 ms apart: 1.8 s in all with the head, each gap well inside the 1 s timeout.
    backend = raw_backend(trickle(0.3, 5, 0.3))
    lb = start_balancer(pool_config([backend.url], timeouts={"read": "1s"}))
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        response = client.get("/slow-body")
    assert response.status_code == 200
    assert response.content == b"x" * 5


def test_head_slower_than_the_read_timeout_gets_504(start_balancer, raw_backend) -> None:  # type: ignore[no-untyped-def]
    backend = raw_backend(trickle(2.0, 1, 0))
    lb = start_balancer(fast_pool([backend.url]))
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        started = time.monotonic()
        response = client.get("/slow-head")
    assert response.status_code == 504
    assert time.monotonic() - started < 1.9  # answered before the head came


def test_body_stalling_past_the_read_timeout_aborts_the_client(start_balancer, raw_backend) -> None:  # type: ignore[no-untyped-def]
    backend = raw_backend(trickle(0, 3, 1.0))
    lb = start_balancer(fast_pool([backend.url]))
    started = time.monotonic()
    response = raw_request(lb.port, b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == 200 and response.header("content-length") == "3"
    assert len(response.body) < 3  # cut off, never padded or ended cleanly
    assert time.monotonic() - started < 2
    wait_until(lambda: idle_transport(lb))


# -- DNS -----------------------------------------------------------------------------------------


def test_unresolvable_backend_gets_502_connect_error(start_balancer) -> None:  # type: ignore[no-untyped-def]
    # RFC 6761: names under .invalid never resolve, so no lookup can reach a real host.
    # error_detail: full, so that the body says which lookup failed.
    config = {**fast_pool(["http://backend.invalid:8080"]), "server": {"error_detail": "full"}}
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        response = client.get("/x")
    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "bad_gateway"
    assert "connect_error" in body["detail"] and "backend.invalid" in body["detail"]


def test_unresolvable_backend_is_retried_on_another(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((good, server),) = start_backends(1)
    config = fast_pool(
        ["http://backend.invalid:8080", server.url],
        # Every other request needs its retry here: a budget that allows them all.
        retries={"attempts": 2, "retry_on": ["connect_error"], "budget_percent": 100},
    )
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        statuses = [client.post("/echo", content=b"body").status_code for _ in range(10)]
    assert statuses == [200] * 10
    assert good.count() == 10
