"""The app as a library: create_app, mounting, errors the balancer makes, routing, access log."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from conftest import pool_config
from lb import create_app


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


def test_errors_are_json_with_request_id(start_balancer) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again: connections are refused
    config = {
        "pools": {
            "dead": {"backends": [f"http://127.0.0.1:{dead}"]},
            "empty": {"backends": [{"url": "http://127.0.0.1:9", "weight": 0}]},
        },
        "routes": [
            {"path_prefix": "/dead", "pool": "dead"},
            {"path_prefix": "/empty", "pool": "empty"},
        ],
        "logging": {"access_log": False},
    }
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url) as client:
        bad = client.get("/dead", headers={"x-request-id": "req-1"})
        assert bad.status_code == 502
        assert bad.json() == {
            "error": "bad_gateway",
            "detail": bad.json()["detail"],
            "request_id": "req-1",
        }
        assert "connect_error" in bad.json()["detail"]
        none = client.get("/empty")
        assert none.status_code == 503 and none.json()["error"] == "no_backend"
        assert int(none.headers["retry-after"]) >= 1
        missing = client.get("/elsewhere")
        assert missing.status_code == 404 and missing.json()["error"] == "no_route"


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
