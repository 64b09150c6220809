"""SPEC section 11: request body limits and a route's allow/deny lists, through a real balancer
in front of a real backend that records what reached it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from conftest import pool_config
from rawbackend import counting
from servers import raw_request, wait_until


@pytest.fixture
def recorded(raw_backend, start_balancer):  # type: ignore[no-untyped-def]
    """A counting backend (complete requests only) behind lb with a 4 KiB body limit; the
    /big route allows 64 KiB."""
    backend = raw_backend(counting)
    config = pool_config([backend.url])
    config["server"] = {"max_body_bytes": "4KiB"}
    config["routes"] = [
        {"pool": "web", "path_prefix": "/big", "max_body_bytes": "64KiB"},
        {"pool": "web", "path_prefix": "/"},
    ]
    return backend, start_balancer(config)


def test_a_declared_length_over_the_limit_gets_413_and_no_backend_is_contacted(recorded) -> None:  # type: ignore[no-untyped-def]
    backend, lb = recorded
    with httpx.Client(base_url=lb.url) as client:
        response = client.post("/upload", content=b"x" * 5000)
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"
        assert response.headers["x-request-id"] == response.json()["request_id"]
        # The connection stays usable: the refused body was read and dropped.
        assert client.post("/upload", content=b"x" * 4096).status_code == 200
    assert backend.connections == 1
    assert [len(r["body"]) for r in backend.requests] == [4096]


def test_a_route_limit_replaces_the_server_limit(recorded) -> None:  # type: ignore[no-untyped-def]
    backend, lb = recorded
    with httpx.Client(base_url=lb.url) as client:
        assert client.post("/big/x", content=b"x" * 60_000).status_code == 200
        assert client.post("/big/x", content=b"x" * 70_000).status_code == 413
    assert [len(r["body"]) for r in backend.requests] == [60_000]


def test_a_chunked_body_growing_past_the_limit_is_cut_and_the_backend_request_aborted(
    recorded,
) -> None:  # type: ignore[no-untyped-def]
    backend, lb = recorded

    def body() -> Iterator[bytes]:
        yield b"a" * 1000
        # The upstream request is under way (its first chunk went out) before the rest comes.
        wait_until(lambda: backend.connections >= 1)
        for _ in range(8):
            yield b"b" * 1000

    with httpx.Client(base_url=lb.url, timeout=10) as client:
        response = client.post("/upload", content=body())
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"
        # Under the limit, chunked goes through whole.
        small = client.post("/upload", content=iter([b"c" * 2000, b"d" * 2000]))
        assert small.status_code == 200
    # The backend got exactly one complete request: the small one. The big one was cut.
    assert [r["body"] for r in backend.requests] == [b"c" * 2000 + b"d" * 2000]


@pytest.fixture
def filtered(start_backends, start_balancer):  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    config = pool_config([server.url])
    config["trusted_proxies"] = ["127.0.0.0/8"]
    config["routes"] = [
        {"pool": "web", "path_prefix": "/office", "allow": ["10.0.0.0/8"], "deny": ["10.1.0.0/16"]},
        {"pool": "web", "path_prefix": "/public", "deny": ["192.0.2.0/24", "2001:db8::/32"]},
    ]
    return app, start_balancer(config)


@pytest.mark.parametrize(
    ("path", "client_ip", "status"),
    [
        ("/office", "10.2.3.4", 200),
        ("/office", "10.1.2.3", 403),  # denied wins over allowed
        ("/office", "192.168.1.1", 403),
        ("/office", None, 403),  # the peer itself, 127.0.0.1
        ("/public", "198.51.100.7", 200),
        ("/public", "192.0.2.7", 403),
        ("/public", "2001:db8::1", 403),
        ("/public", None, 200),
    ],
)
def test_allow_and_deny_judge_the_client_ip_and_refused_requests_reach_no_backend(
    filtered, path: str, client_ip: str | None, status: int
) -> None:  # type: ignore[no-untyped-def]
    app, lb = filtered
    headers = {"x-forwarded-for": client_ip} if client_ip else {}
    response = httpx.get(lb.url + path, headers=headers)
    assert response.status_code == status
    if status == 403:
        assert response.json()["error"] == "forbidden"
        assert app.count() == 0
    else:
        assert app.count(path) == 1


def test_an_untrusted_peer_cannot_claim_an_allowed_address(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    config = pool_config([server.url])  # no trusted_proxies: X-Forwarded-For is not believed
    config["routes"] = [{"pool": "web", "allow": ["10.0.0.0/8"]}]
    lb = start_balancer(config)
    response = httpx.get(lb.url + "/", headers={"x-forwarded-for": "10.0.0.1"})
    assert response.status_code == 403
    assert app.count() == 0


def test_a_denied_websocket_upgrade_gets_403_and_reaches_no_backend(filtered) -> None:  # type: ignore[no-untyped-def]
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    app, lb = filtered
    with pytest.raises(InvalidStatus) as info:
        connect(
            f"ws://127.0.0.1:{lb.port}/office/ws",
            additional_headers={"x-forwarded-for": "192.0.2.1"},
        )
    assert info.value.response.status_code == 403
    assert app.count() == 0


def test_expect_100_continue_over_the_limit_gets_413_and_no_100(recorded) -> None:  # type: ignore[no-untyped-def]
    # curl sends Expect: 100-continue for large uploads, then waits: the 413 comes at once and
    # the body is never asked for.
    backend, lb = recorded
    head = b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\nExpect: 100-continue\r\n\r\n"
    response = raw_request(lb.port, head)
    assert response.status == 413
    assert response.json()["error"] == "payload_too_large"
    assert backend.connections == 0
