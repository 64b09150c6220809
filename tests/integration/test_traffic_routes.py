"""SPEC 12 through a real balancer in front of real backends: canary routes by header, cookie and
method; header rules seen by the backend and the client; redirects; a route's read timeout."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from servers import raw_request


def two_pools(main: str, canary: str, routes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "pools": {"default": {"backends": [main]}, "canary": {"backends": [canary]}},
        "routes": routes,
        "logging": {"access_log": False},
        **extra,
    }


@pytest.fixture
def canary(start_backends, start_balancer):  # type: ignore[no-untyped-def]
    (_, main), (_, canary) = start_backends(2)
    routes: list[dict[str, Any]] = [
        {"path_prefix": "/api", "headers": {"X-Canary": "always"}, "pool": "canary"},
        {"path_prefix": "/api", "headers": {"User-Agent": "~^beta-client/"}, "pool": "canary"},
        {"path_prefix": "/api", "cookies": {"canary": "yes"}, "pool": "canary"},
        {"path_prefix": "/api", "methods": ["DELETE", "PATCH"], "pool": "canary"},
        {"path_prefix": "/api", "pool": "default"},
    ]
    return start_balancer(two_pools(main.url, canary.url, routes))


def backend_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-backend"]


def test_canary_pool_chosen_by_header(canary) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=canary.url) as client:
        assert backend_of(client.get("/api/x")) == "b1"
        assert backend_of(client.get("/api/x", headers={"X-Canary": "always"})) == "b2"
        assert backend_of(client.get("/api/x", headers={"X-Canary": "sometimes"})) == "b1"
        assert backend_of(client.get("/api/x", headers={"User-Agent": "beta-client/2.1"})) == "b2"
        assert backend_of(client.get("/api/x", headers={"User-Agent": "x beta-client/2"})) == "b1"


def test_canary_pool_chosen_by_cookie(canary) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=canary.url) as client:
        assert backend_of(client.get("/api/x", headers={"Cookie": "a=1; canary=yes"})) == "b2"
        assert backend_of(client.get("/api/x", headers={"Cookie": "canary=no; b=2"})) == "b1"
        assert backend_of(client.get("/api/x", headers={"Cookie": "notcanary=yes"})) == "b1"


def test_canary_pool_chosen_by_method(canary) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=canary.url) as client:
        assert backend_of(client.delete("/api/x")) == "b2"
        assert backend_of(client.patch("/api/x", content=b"{}")) == "b2"
        assert backend_of(client.post("/api/x", content=b"{}")) == "b1"


@pytest.fixture
def rewriting(start_backends, start_balancer):  # type: ignore[no-untyped-def]
    backends = start_backends(1)
    config = {
        "pools": {"web": {"backends": [backends[0][1].url]}},
        "routes": [
            {
                "pool": "web",
                "request_headers": {
                    "set": {"X-Client": "{client_ip}", "X-Forwarded-Proto": "https"},
                    "add": {"X-Seen-By": "lb {request_id} for {scheme}://{host}"},
                    "remove": ["X-Secret", "Cookie"],
                },
                "response_headers": {
                    "set": {"X-Frame-Options": "DENY", "Server": "lb"},
                    "add": {"Set-Cookie": "route=1; Path=/", "X-Answered-For": "{client_ip}"},
                    "remove": ["X-Backend"],
                },
            }
        ],
        "logging": {"access_log": False},
    }
    return backends[0][0], start_balancer(config)


def test_request_headers_seen_by_the_backend_with_placeholders_filled(rewriting) -> None:  # type: ignore[no-untyped-def]
    backend, lb = rewriting
    headers = {
        "Host": "Shop.Example:8080",
        "X-Request-ID": "req-42",
        "X-Secret": "s3",
        "Cookie": "session=abc",
        "X-Forwarded-Proto": "http",
        "X-Seen-By": "client",
    }
    with httpx.Client(base_url=lb.url) as client:
        response = client.get("/echo", headers=headers)
    assert response.status_code == 200
    seen = response.json()["headers"]
    names = [name for name, _ in seen]
    values = dict(seen)
    assert "x-secret" not in names and "cookie" not in names
    assert values["x-client"] == "127.0.0.1"
    # `set` replaces lb's own X-Forwarded-Proto; `add` keeps the client's field as well.
    assert [v for n, v in seen if n == "x-forwarded-proto"] == ["https"]
    assert [v for n, v in seen if n == "x-seen-by"] == [
        "client",
        "lb req-42 for http://shop.example",
    ]
    assert values["host"] == "Shop.Example:8080"


def test_response_headers_seen_by_the_client(rewriting) -> None:  # type: ignore[no-untyped-def]
    backend, lb = rewriting
    with httpx.Client(base_url=lb.url) as client:
        response = client.get("/cookies")
    assert response.status_code == 200
    assert "x-backend" not in response.headers
    assert response.headers.get_list("server") == ["lb"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-answered-for"] == "127.0.0.1"
    # `add` keeps the backend's two cookies.
    assert response.headers.get_list("set-cookie") == [
        "a=1; Path=/",
        "b=2; Path=/",
        "route=1; Path=/",
    ]


def test_response_headers_on_lbs_own_errors_too(start_balancer) -> None:  # type: ignore[no-untyped-def]
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    config = {
        "pools": {"web": {"backends": [dead]}},
        "routes": [{"pool": "web", "response_headers": {"set": {"X-Route": "web"}}}],
        "logging": {"access_log": False},
    }
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url) as client:
        response = client.get("/")
    assert response.status_code == 502
    assert response.headers["x-route"] == "web"
    assert response.json()["error"] == "bad_gateway"


def test_cached_responses_get_the_rules_on_the_way_out(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    backends = start_backends(1)
    config = {
        "pools": {"web": {"backends": [backends[0][1].url]}},
        "routes": [
            {
                "pool": "web",
                "response_headers": {"set": {"X-Id": "{request_id}"}, "remove": ["X-Backend"]},
            }
        ],
        "cache": {"store": "memory"},
        "logging": {"access_log": False},
    }
    lb = start_balancer(config)
    path = "/cache/r?h=Cache-Control:max-age=60"
    with httpx.Client(base_url=lb.url) as client:
        first = client.get(path, headers={"X-Request-ID": "first"})
        second = client.get(path, headers={"X-Request-ID": "second"})
    assert first.status_code == second.status_code == 200
    assert backends[0][0].count("/cache/r") == 1  # the second was a hit
    assert first.headers["x-id"] == "first"
    assert second.headers["x-id"] == "second"  # filled for this request, not stored
    assert "x-backend" not in second.headers


@pytest.fixture
def redirects(start_backends, start_balancer):  # type: ignore[no-untyped-def]
    backends = start_backends(1)
    config = {
        "pools": {"web": {"backends": [backends[0][1].url]}},
        "routes": [
            {"host": "plain.example", "redirect": {"to": "https://{host}{path}"}},
            {"path_prefix": "/secure", "redirect": {"to": "https://{host}{path}"}},
            {
                "path_prefix": "/old",
                "redirect": {"to": "{scheme}://new.example/x{path}", "status": 308},
            },
            {
                "path_prefix": "/gone",
                "redirect": {"to": "/elsewhere", "status": 302},
                "response_headers": {"add": {"X-Route": "gone"}},
            },
            {"pool": "web"},
        ],
        "logging": {"access_log": False},
    }
    return backends[0][0], start_balancer(config)


def test_http_to_https_redirect_answered_without_a_backend(redirects) -> None:  # type: ignore[no-untyped-def]
    backend, lb = redirects
    with httpx.Client(base_url=lb.url) as client:
        response = client.post(
            "/a/%2e/b?x=1&y", headers={"Host": "PLAIN.example:8080", "X-Request-ID": "r1"}
        )
    assert response.status_code == 301
    assert response.headers["location"] == "https://plain.example/a/%2e/b?x=1&y"
    assert response.headers["cache-control"] == "max-age=3600"
    assert response.headers["x-request-id"] == "r1"
    assert "date" in response.headers
    assert response.text == "Redirecting to https://plain.example/a/%2e/b?x=1&y\n"
    assert backend.count() == 0


def test_redirect_status_scheme_and_response_headers(redirects) -> None:  # type: ignore[no-untyped-def]
    backend, lb = redirects
    with httpx.Client(base_url=lb.url) as client:
        permanent = client.get("/old/page?q")
        temporary = client.get("/gone/x")
        proxied = client.get("/other")
    assert permanent.status_code == 308
    assert permanent.headers["location"] == "http://new.example/x/old/page?q"
    assert temporary.status_code == 302
    assert temporary.headers["location"] == "/elsewhere"
    assert temporary.headers["cache-control"] == "no-store"
    assert temporary.headers["x-route"] == "gone"
    assert proxied.status_code == 200
    assert backend.count() == 1


def test_redirect_refuses_a_host_that_would_choose_the_target(redirects) -> None:  # type: ignore[no-untyped-def]
    backend, lb = redirects
    # lb's server refuses most bad Hosts itself; an empty one reaches the redirect.
    for host in (b"evil.example/x", b""):
        response = raw_request(lb.port, b"GET /secure/x HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        assert response.status == 400, host
        assert response.json()["error"] == "bad_request"
    ok = raw_request(lb.port, b"GET /secure/x HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n")
    assert ok.status == 301
    assert ok.header("location") == "https://[::1]/secure/x"
    assert backend.count() == 0


def test_route_read_timeout_shorter_than_the_pools(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    backends = start_backends(1)
    config = {
        "pools": {"web": {"backends": [backends[0][1].url], "timeouts": {"read": "5s"}}},
        "routes": [
            {"path_prefix": "/cache/short", "pool": "web", "timeouts": {"read": "200ms"}},
            {"pool": "web"},
        ],
        "logging": {"access_log": False},
    }
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        start = time.monotonic()
        short = client.get("/cache/short?delay=1")
        elapsed = time.monotonic() - start
        other = client.get("/cache/long?delay=1")
    assert short.status_code == 504
    assert short.json()["error"] == "timeout"
    assert elapsed < 0.9
    assert other.status_code == 200
