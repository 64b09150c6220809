"""The app as a library: create_app, mounting, errors the balancer makes, routing, access log."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from conftest import pool_config
from lb import create_app
from servers import raw_request


def test_mounted_without_lifespan_proxies_below_the_mount_point(
    start_backends, start_server
) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    lb = create_app(pool_config([server.url]))

    async def home(request: object) -> PlainTextResponse:
        return PlainTextResponse("host app")

    host = Starlette(routes=[Route("/", home), Mount("/proxy", app=lb)])
    # lifespan off: the host app never runs the mounted app's startup.
    outer = start_server(host, lifespan="off")
    with httpx.Client(base_url=outer.url) as client:
        assert client.get("/").text == "host app"
        response = client.get("/proxy/echo/x?q=1")
        assert response.status_code == 200
        assert response.json()["raw_path"] == "/echo/x"
        assert response.json()["query"] == "q=1"
        assert client.get("/proxy/_lb/healthz").status_code == 200
    # Nobody runs the mounted app's shutdown either: a host app that wants a clean stop calls it.
    asyncio.run_coroutine_threadsafe(lb.shutdown(), outer.loop).result(10)


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connections are refused


def failing_pools(slow_url: str, dead: int, **server: object) -> dict[str, object]:
    """A balancer config whose routes fail: /dead refused (502), /empty no backend (503),
    /slow/hang a backend slower than the read timeout (504)."""
    return {
        "pools": {
            "dead": {"backends": [f"http://127.0.0.1:{dead}"]},
            "empty": {"backends": [{"url": "http://127.0.0.1:9", "weight": 0}]},
            "slow": {"backends": [slow_url], "timeouts": {"read": "200ms"}},
        },
        "routes": [
            {"path_prefix": "/dead", "pool": "dead"},
            {"path_prefix": "/empty", "pool": "empty"},
            {"path_prefix": "/slow", "pool": "slow", "strip_prefix": True},
        ],
        "logging": {"access_log": False},
        "server": server,
    }


def test_error_bodies_say_a_fixed_sentence_and_the_log_says_why(
    start_backends, start_balancer, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    # SPEC 3: an error body names no backend address, port, exception or errno.
    caplog.set_level(logging.DEBUG, "lb.errors")
    ((backend, server),) = start_backends(1)
    backend.release.clear()
    dead = refused_port()
    lb = start_balancer(failing_pools(server.url, dead))
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        answers = {
            "bad_gateway": client.get("/dead", headers={"x-request-id": "req-502"}),
            "no_backend": client.get("/empty", headers={"x-request-id": "req-503"}),
            "timeout": client.get("/slow/hang", headers={"x-request-id": "req-504"}),
            "no_route": client.get("/elsewhere", headers={"x-request-id": "req-404"}),
        }
    backend.release.set()
    expected = {
        "bad_gateway": (502, "the backend did not send a valid answer", "req-502"),
        "no_backend": (503, "no backend is available to answer this request", "req-503"),
        "timeout": (504, "the backend did not answer in time", "req-504"),
        "no_route": (404, "no route matches this request", "req-404"),
    }
    for code, (status, sentence, request_id) in expected.items():
        response = answers[code]
        assert response.status_code == status
        assert response.json() == {"error": code, "detail": sentence, "request_id": request_id}
        text = response.text
        for leak in ("127.0.0.1", str(dead), str(server.port), "Errno", "Error", "refused"):
            assert leak not in text, (code, leak)
        assert response.headers["cache-control"] == "no-store"
    assert int(answers["no_backend"].headers["retry-after"]) >= 1
    # The cause is in the log instead, with the request id and the backend.
    lines = [r.getMessage() for r in caplog.records if r.name == "lb.errors"]
    refused = next(line for line in lines if "request_id=req-502" in line)
    assert "answered 502 bad_gateway" in refused and "connect_error" in refused
    assert f"backend=127.0.0.1:{dead}" in refused
    slow = next(line for line in lines if "request_id=req-504" in line)
    assert "answered 504 timeout" in slow and f"backend=127.0.0.1:{server.port}" in slow
    empty = next(line for line in lines if "request_id=req-503" in line)
    assert "no usable backend in pool empty" in empty


def test_error_detail_full_puts_the_cause_in_the_body(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    backend.release.clear()
    dead = refused_port()
    lb = start_balancer(failing_pools(server.url, dead, error_detail="full"))
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        refused = client.get("/dead").json()
        slow = client.get("/slow/hang").json()
        empty = client.get("/empty").json()
    backend.release.set()
    assert refused["error"] == "bad_gateway"
    assert "connect_error" in refused["detail"] and f"127.0.0.1:{dead}" in refused["detail"]
    assert slow["error"] == "timeout" and f"127.0.0.1:{server.port}" in slow["detail"]
    assert empty == {**empty, "error": "no_backend", "detail": "no usable backend in pool empty"}
    # lb's HTTP protocol follows the setting too.
    long_target = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    too_long = raw_request(lb.port, long_target)
    assert too_long.status == 414
    assert too_long.json()["detail"] == "request target longer than 8192 bytes"


def test_read_timeout_gives_504(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    backend.release.clear()
    lb = start_balancer(pool_config([server.url], timeouts={"read": "200ms"}))
    response = httpx.get(lb.url + "/hang", timeout=10)
    backend.release.set()
    assert response.status_code == 504
    assert response.json()["error"] == "timeout"


def test_routes_by_host_wildcard_prefix_and_strip(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    backends = start_backends(3)
    urls = [s.url for _, s in backends]
    config = {
        "pools": {
            "api": {"backends": [urls[0]]},
            "shop": {"backends": [urls[1]]},
            "default": {"backends": [urls[2]]},
        },
        "routes": [
            {"host": "api.example.com", "path_prefix": "/v1", "pool": "api", "strip_prefix": True},
            {"host": "*.shop.example", "pool": "shop"},
        ],
        "logging": {"access_log": False},
    }
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url) as client:
        r = client.get("/v1/users?x=1", headers={"host": "API.example.com:8080"})
        assert r.json()["backend"] == "b1" and r.json()["raw_path"] == "/users"
        # Whole segments only: /v1x is not under /v1.
        assert client.get("/v1x", headers={"host": "api.example.com"}).json()["backend"] == "b3"
        assert client.get("/", headers={"host": "eu.shop.example"}).json()["backend"] == "b2"
        assert client.get("/", headers={"host": "shop.example"}).json()["backend"] == "b3"


def test_access_log_line_per_request(start_backends, start_balancer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    log = tmp_path / "access.log"
    config = pool_config([server.url])
    config["logging"] = {"access_log": True, "file": str(log)}
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url) as client:
        client.get(
            "/echo?a=1",
            headers={
                "x-request-id": "log-1",
                "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
            },
        )
        client.get("/status/503")
    lb.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    for field in (
        "time",
        "request_id",
        "client_ip",
        "method",
        "path",
        "status",
        "bytes_sent",
        "duration_ms",
        "pool",
        "backend",
        "attempts",
        "cache",
    ):
        assert field in first
    assert first["request_id"] == "log-1" and first["path"] == "/echo?a=1"
    assert first["status"] == 200 and first["pool"] == "web" and first["attempts"] == 1
    assert first["client_ip"] == "127.0.0.1" and first["bytes_sent"] > 0
    assert first["trace_id"] == "a" * 32
    assert lines[1]["status"] == 503


@pytest.mark.parametrize(
    ("trusted", "xff", "expected"),
    [
        ([], "203.0.113.7", "127.0.0.1"),
        (["127.0.0.0/8"], "203.0.113.7", "203.0.113.7"),
        (["127.0.0.0/8", "10.0.0.0/8"], "203.0.113.7, 10.1.2.3", "203.0.113.7"),
        (["127.0.0.0/8"], "not-an-ip", "127.0.0.1"),
    ],
)
def test_client_ip_believes_only_trusted_proxies(
    start_backends, start_balancer, tmp_path, trusted, xff, expected
) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    log = tmp_path / "access.log"
    config = pool_config([server.url])
    config["trusted_proxies"] = trusted
    config["logging"] = {"access_log": True, "file": str(log)}
    lb = start_balancer(config)
    httpx.get(lb.url + "/echo", headers={"x-forwarded-for": xff})
    lb.stop()
    assert json.loads(log.read_text().splitlines()[0])["client_ip"] == expected


def test_two_apps_in_one_process_share_nothing(start_backends) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    a = create_app(pool_config([server.url]))
    b = create_app(pool_config([server.url]))
    assert a.transport is not b.transport
    assert a.generation.pools["web"] is not b.generation.pools["web"]
    assert a.metrics is not b.metrics
