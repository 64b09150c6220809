"""SPEC section 6 with the memory store, through a real balancer in front of real backends."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import pool_config
from servers import read_response, wait_until


def limited(urls: list[str], **limit: Any) -> dict[str, Any]:
    config = pool_config(urls)
    config["rate_limit"] = {"rate": 0.01, "burst": 3, **limit}  # no refill within a test
    return config


@pytest.fixture
def backend(start_backends):  # type: ignore[no-untyped-def]
    [(app, server)] = start_backends(1)
    return app, server


def test_the_burst_passes_then_429_and_rejected_requests_never_reach_a_backend(
    backend, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    app, server = backend
    lb = start_balancer(limited([server.url]))
    with httpx.Client(base_url=lb.url) as client:
        responses = [client.get("/x") for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert app.count("/x") == 3
    assert [r.headers["ratelimit-limit"] for r in responses] == ["3"] * 5
    assert [r.headers["ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0", "0"]
    assert [r.headers["ratelimit-reset"] for r in responses[:3]] == ["100", "200", "300"]
    rejected = responses[3]
    assert rejected.headers["retry-after"] == "100"
    assert rejected.json()["error"] == "rate_limited"
    assert rejected.json()["request_id"] == rejected.headers["x-request-id"]
    assert "ratelimit-limit" not in {k.lower() for k, _ in app.seen[0]["headers"]}


def test_a_rejected_request_is_answered_without_reading_its_body(backend, start_balancer) -> None:  # type: ignore[no-untyped-def]
    app, server = backend
    lb = start_balancer(limited([server.url], burst=1))
    assert httpx.get(lb.url + "/").status_code == 200
    with socket.create_connection(("127.0.0.1", lb.port), 10) as sock:
        # Announce 100 MB and send none of it: the answer must not wait for the body.
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        response = read_response(sock)
    assert response.status == 429
    assert response.json()["error"] == "rate_limited"
    assert app.count("/upload") == 0


def test_refill_lets_a_client_through_again(backend, start_balancer) -> None:  # type: ignore[no-untyped-def]
    app, server = backend
    lb = start_balancer(limited([server.url], rate=20, burst=1))  # one every 50 ms
    with httpx.Client(base_url=lb.url) as client:
        assert client.get("/").status_code == 200
        assert client.get("/").status_code in (200, 429)
        wait_until(lambda: client.get("/").status_code == 429, timeout=5, interval=0)
        wait_until(lambda: client.get("/").status_code == 200, timeout=5)


def test_clients_behind_a_trusted_proxy_are_limited_by_their_own_address(
    backend, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    app, server = backend
    config = limited([server.url], burst=1)
    config["trusted_proxies"] = ["127.0.0.0/8"]
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url) as client:
        statuses = [
            client.get("/", headers={"X-Forwarded-For": ip}).status_code
            for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.3")
        ]
    assert statuses == [200, 200, 429, 200]


def test_a_header_key_limits_each_value_apart_and_falls_back_to_the_client_ip(
    backend, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    app, server = backend
    lb = start_balancer(limited([server.url], burst=1, key="header:X-Api-Key"))
    with httpx.Client(base_url=lb.url) as client:

        def get(key: str | None) -> int:
            headers = {"X-Api-Key": key} if key is not None else {}
            return client.get("/", headers=headers).status_code

        assert [get("alpha"), get("beta"), get("alpha"), get("beta")] == [200, 200, 429, 429]
        assert [get(None), get(None)] == [200, 429]  # no header: the client's IP
        assert get("gamma") == 200


def test_routes_inherit_override_or_switch_off_the_limit(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    [(app, server)] = start_backends(1)
    config = limited([server.url], burst=2)
    config["routes"] = [
        {"path_prefix": "/strict", "pool": "web", "rate_limit": {"burst": 1}},
        {"path_prefix": "/free", "pool": "web", "rate_limit": False},
        {"path_prefix": "/", "pool": "web"},
    ]
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url) as client:
        strict = [client.get("/strict").status_code for _ in range(2)]
        free = [client.get("/free") for _ in range(10)]
        inherited = [client.get(path).status_code for path in ("/a", "/b", "/c")]
    assert strict == [200, 429]
    assert all(r.status_code == 200 for r in free)
    assert all("ratelimit-limit" not in r.headers for r in free)
    assert inherited == [200, 200, 429]  # /a, /b and /c share the top-level allowance
    assert app.count("/free") == 10


def test_admin_and_metrics_paths_are_never_limited(backend, start_balancer) -> None:  # type: ignore[no-untyped-def]
    app, server = backend
    lb = start_balancer(limited([server.url], burst=1))
    with httpx.Client(base_url=lb.url) as client:
        assert client.get("/").status_code == 200
        assert client.get("/").status_code == 429
        for _ in range(5):
            for path in ("/_lb/healthz", "/_lb/status", "/_lb/metrics"):
                response = client.get(path)
                assert response.status_code != 429, path
                assert "ratelimit-limit" not in response.headers, path


def test_websocket_upgrades_on_a_limited_route_are_limited(backend, start_balancer) -> None:  # type: ignore[no-untyped-def]
    app, server = backend
    lb = start_balancer(limited([server.url], burst=1))
    with connect(f"ws://127.0.0.1:{lb.port}/ws", open_timeout=10) as ws:
        assert ws.response.headers["ratelimit-remaining"] == "0"
        ws.send("hi")
        assert ws.recv(timeout=10) == "b1:hi"
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{lb.port}/ws", open_timeout=10)
    assert refused.value.response.status_code == 429
    assert refused.value.response.headers["retry-after"] == "100"


def test_concurrent_requests_get_exactly_the_burst(backend, start_balancer) -> None:  # type: ignore[no-untyped-def]
    app, server = backend
    lb = start_balancer(limited([server.url], burst=25))
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=lb.url) as client:
            for _ in range(10):
                status = client.get("/c").status_code
                with lock:
                    statuses.append(status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(statuses) == 80
    assert statuses.count(200) == 25 and statuses.count(429) == 55
    assert app.count("/c") == 25
