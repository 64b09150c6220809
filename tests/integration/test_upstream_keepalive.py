"""Upstream keep-alive never costs a request (SPEC section 3): lb retires idle connections before
common backends close them (`timeouts.idle`, the backend's `Keep-Alive: timeout=N`), and a request
that meets a connection the backend closed before reading it is sent again on a new one, whatever
its method, with its body. Against a scripted backend that closes every reused connection, and
against real servers (uvicorn, Node, gunicorn) with one-second keep-alive timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from apps import Backend
from conftest import pool_config
from rawbackend import RawBackend, answer_each, closes_when_reused, ok

FAST = {"connect": "1s", "read": "5s", "pool": "2s"}


def chunks(data: bytes, size: int, pause: float = 0.0) -> Iterator[bytes]:
    """`data` in pieces, as a slow client sends it (a chunked upload through httpx)."""
    for start in range(0, len(data), size):
        if pause:
            time.sleep(pause)
        yield data[start : start + size]


def test_a_stale_connection_costs_no_request_whatever_the_method(
    start_balancer: Any, raw_backend: Any
) -> None:
    backend = raw_backend(closes_when_reused)
    lb = start_balancer(pool_config([backend.url], timeouts=FAST))
    streamed = b"s" * 50_000  # under the 64 KiB lb keeps to send again, in many pieces
    sent = [
        ("GET", "/warm", b""),  # opens the connection the next one finds closed
        ("POST", "/post", b"form=1"),
        ("PUT", "/put", b"x" * 20_000),
        ("PATCH", "/patch", b"{}"),
        ("DELETE", "/delete", b""),
        ("POST", "/streamed", streamed),
    ]
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        for method, path, body in sent:
            content: Any = chunks(body, 4096, 0.001) if path == "/streamed" else body
            response = client.request(method, path, content=content)
            assert (response.status_code, response.content) == (200, b"ok"), path
    # Each request reached the backend exactly once, body and all; none was counted as a retry.
    got = [(r["method"].decode(), r["url"].decode(), r["body"]) for r in backend.requests]
    assert got == sent
    metrics = httpx.get(lb.url + "/_lb/metrics").text
    assert "lb_upstream_errors_total{" not in metrics
    assert 'lb_retries_total{pool="web"} 0.0' in metrics


def test_a_stale_connection_with_a_body_too_large_to_keep_is_a_502(
    start_balancer: Any, raw_backend: Any
) -> None:
    """Past 64 KiB streamed, lb keeps no copy of a body: the one request a backend's idle close
    can still cost (docs/proxying.md)."""

    def reads_then_closes(conn: Any, backend: RawBackend) -> None:
        backend.read_head(conn)
        conn.sendall(ok())
        received = 0
        while received < 100_000:  # lb has streamed well past what it keeps, then the close
            data = conn.recv(65536)
            if not data:
                return
            received += len(data)
        conn.close()

    backend = raw_backend(reads_then_closes)
    lb = start_balancer(pool_config([backend.url], timeouts=FAST))
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        assert client.get("/warm").status_code == 200
        response = client.post("/big", content=chunks(b"b" * 300_000, 8192, 0.001))
    assert response.status_code == 502 and response.json()["error"] == "bad_gateway"


def test_timeouts_idle_retires_pooled_connections(start_balancer: Any, raw_backend: Any) -> None:
    backend = raw_backend(answer_each(lambda conn, n: ok()))
    lb = start_balancer(pool_config([backend.url], timeouts={**FAST, "idle": "200ms"}))
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        assert client.get("/1").status_code == 200
        assert client.get("/2").status_code == 200  # at once: the same connection
        time.sleep(0.4)  # the idle gap under test, past timeouts.idle
        assert client.get("/3").status_code == 200
    assert [conn for conn, _ in backend.heads] == [1, 1, 2]


# -- real servers with short keep-alive timeouts ------------------------------------------------


def idle_gaps(url: str, gaps: list[float], clients: int = 10) -> list[tuple[str, str, str]]:
    """`clients` clients in step, each on its own connection: all send a PUT or POST with a body
    (a few bytes to ~20 KB) at once, then all stay idle for the next of `gaps`, and so on. lb thus
    holds `clients` upstream connections idle for each gap, and meets them in a burst (a busy
    event loop is when it is slowest to notice a close). Returns what was sent as (method,
    target, body); fails on any answer but 200."""
    sent: list[tuple[str, str, str]] = []
    failures: list[str] = []
    lock = threading.Lock()
    step = threading.Barrier(clients)

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for round_ in range(len(gaps) + 1):
                step.wait(30)
                if round_:
                    time.sleep(gaps[round_ - 1])  # the idle gap under test, not a wait
                method = "PUT" if (index + round_) % 2 else "POST"
                target = f"/item/{index}-{round_}"
                body = f"{index}-{round_};" * (1, 300, 3000)[(index + round_) % 3]
                try:
                    response = http.request(method, target, content=body.encode())
                    outcome = f"{response.status_code} {response.text[:100]}"
                except httpx.HTTPError as exc:
                    outcome = repr(exc)
                with lock:
                    sent.append((method, target, body))
                    if not outcome.startswith("200 "):
                        gap = gaps[round_ - 1] if round_ else 0
                        failures.append(f"{method} {target} after {gap:.3f}s idle: {outcome}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    return sent


def around(seconds: float, steps: tuple[int, ...] = (-3, -2, -1, 0, 1, 2)) -> list[float]:
    """Gaps a millisecond or two apart around when the backend closes: requests that arrive just
    before it closes, just after, and as it closes."""
    return [seconds + ms / 1000 for ms in steps]


def test_uvicorn_closing_idle_connections_after_one_second(
    start_server: Any, start_balancer: Any
) -> None:
    app = Backend("uvicorn")
    server = start_server(app, timeout_keep_alive=1)
    lb = start_balancer(pool_config([server.url], timeouts=FAST))
    sent = idle_gaps(lb.url, around(1.0))
    seen = [(r["method"], r["path"], r["body"]) for r in app.seen]
    assert sorted(seen) == sorted(sent)  # each exactly once


def test_node_with_a_one_second_keep_alive_timeout(origins: Any, start_balancer: Any) -> None:
    # Node 20 says Keep-Alive: timeout=1, which lb honours, and closes after 2 s (its own margin).
    node = origins.node(1000)
    lb = start_balancer(pool_config([node.url], timeouts=FAST))
    sent = idle_gaps(lb.url, around(2.0, (-2, -1, 0, 1)))
    assert sorted(node.seen()) == sorted(sent)


def test_gunicorn_threaded_worker_with_keep_alive_one(origins: Any, start_balancer: Any) -> None:
    gunicorn = origins.gunicorn(1)  # gthread: the sync worker does not keep connections
    lb = start_balancer(pool_config([gunicorn.url], timeouts=FAST))
    sent = idle_gaps(lb.url, around(1.0))
    assert sorted(gunicorn.seen()) == sorted(sent)
