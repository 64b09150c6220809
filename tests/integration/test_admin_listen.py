"""SPEC section 11's safe admin API: `admin.listen` (its own socket, the traffic port proxies the
rest of the prefix), 403 for requests through a proxy when no token is asked, probes open."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from conftest import pool_config
from servers import free_port

TOKEN = "s3cret-token"
PROXIED = [{"x-forwarded-for": "127.0.0.1"}, {"x-real-ip": "127.0.0.1"}, {"forwarded": "for=x"}]


@pytest.fixture
def split(start_backends, start_balancer):  # type: ignore[no-untyped-def]
    """lb with its admin API on a port of its own; returns (backend app, lb, admin URL)."""
    ((app, server),) = start_backends(1)
    port = free_port()
    config = pool_config([server.url])
    config["admin"] = {"listen": f"127.0.0.1:{port}"}
    return app, start_balancer(config), f"http://127.0.0.1:{port}"


def test_the_admin_socket_serves_admin_metrics_and_dashboard(split) -> None:  # type: ignore[no-untyped-def]
    app, lb, admin = split
    with httpx.Client(base_url=admin) as client:
        assert client.get("/_lb/status").json()["pools"]["web"]["backends"][0]["state"]
        assert "lb_requests_total" in client.get("/_lb/metrics").text
        assert client.get("/_lb/dashboard").status_code == 200
        assert client.get("/_lb/healthz").status_code == 200
        assert client.get("/_lb/readyz").status_code == 200
        assert client.get("/anything-else").status_code == 404
    assert app.count() == 0  # nothing on the admin socket is proxied


def test_the_traffic_port_proxies_the_prefix_but_answers_probes(split) -> None:  # type: ignore[no-untyped-def]
    app, lb, admin = split
    with httpx.Client(base_url=lb.url) as client:
        for path in ("/_lb/status", "/_lb/metrics", "/_lb/reload", "/_lb/dashboard"):
            response = client.get(path)
            assert response.status_code == 200
            assert response.json()["path"] == path  # the backend's answer
        assert client.get("/_lb/healthz").json() == {"status": "ok"}
        assert client.get("/_lb/readyz").json() == {"status": "ready"}
    assert app.count("/_lb/healthz") == app.count("/_lb/readyz") == 0
    assert app.count() == 4


@pytest.mark.parametrize("headers", PROXIED)
def test_without_a_token_an_admin_request_through_a_proxy_gets_403(
    split, headers: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    app, lb, admin = split
    response = httpx.get(admin + "/_lb/status", headers=headers)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    reload = httpx.post(admin + "/_lb/reload", headers=headers)
    assert reload.status_code == 403
    # Probes stay open for load balancers and orchestrators, proxied or not.
    assert httpx.get(admin + "/_lb/healthz", headers=headers).status_code == 200
    assert httpx.get(lb.url + "/_lb/readyz", headers=headers).status_code == 200


@pytest.mark.parametrize("headers", PROXIED)
def test_on_the_traffic_port_too(start_backends, start_balancer, headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    lb = start_balancer(pool_config([server.url]))
    assert httpx.get(lb.url + "/_lb/status").status_code == 200  # direct, from loopback
    assert httpx.get(lb.url + "/_lb/status", headers=headers).status_code == 403
    assert httpx.get(lb.url + "/_lb/healthz", headers=headers).status_code == 200


def test_with_a_token_a_proxied_admin_request_is_judged_by_it(
    start_backends, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    config = pool_config([server.url])
    config["admin"] = {"token": TOKEN}
    lb = start_balancer(config)
    proxied = {"x-forwarded-for": "127.0.0.1"}
    assert httpx.get(lb.url + "/_lb/status", headers=proxied).status_code == 401
    bearer = {**proxied, "authorization": f"Bearer {TOKEN}"}
    assert httpx.get(lb.url + "/_lb/status", headers=bearer).status_code == 200


def _log_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("workers", [1, 2])
def test_lb_serve_runs_the_admin_socket_and_warns_that_no_token_is_asked(
    start_backends, lb_process, workers: int
) -> None:  # type: ignore[no-untyped-def]
    ((app, server),) = start_backends(1)
    port = free_port()
    config = pool_config([server.url])
    config["admin"] = {"listen": f"127.0.0.1:{port}"}
    lb = lb_process(config, workers=workers)
    admin = f"http://127.0.0.1:{port}"
    assert httpx.get(admin + "/_lb/status").status_code == 200
    assert httpx.get(lb.url + "/_lb/status").json()["path"] == "/_lb/status"
    patch = httpx.patch(
        admin + f"/_lb/pools/web/backends/127.0.0.1:{server.port}", json={"state": "draining"}
    )
    assert patch.status_code == 200
    lines = _log_lines(lb.output())
    warnings = [r for r in lines if r.get("level") == "warning" and "token" in r["message"]]
    assert len(warnings) == 1, lines
    start = [r for r in lines if r.get("message", "").startswith("lb ")]
    assert len(start) == 1, lines
    assert start[0]["admin_token"] is False
    assert start[0]["listeners"] == [lb.url, admin + " (admin)"]
    assert start[0]["config"] == lb.config_path
    assert start[0]["pools"] == 1 and start[0]["backends"] == 1
    assert start[0]["version"]


def test_mounted_without_a_lifespan_the_admin_socket_opens_with_the_first_request(
    start_backends, start_server
) -> None:  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.routing import Mount

    import lb as lb_package

    ((app, server),) = start_backends(1)
    port = free_port()
    config = pool_config([server.url])
    config["admin"] = {"listen": f"127.0.0.1:{port}"}
    balancer = lb_package.create_app(config)
    host = start_server(Starlette(routes=[Mount("/upstream", app=balancer)]), lifespan="off")
    admin = f"http://127.0.0.1:{port}"
    with pytest.raises(httpx.ConnectError):
        httpx.get(admin + "/_lb/healthz")  # nothing started it yet
    assert httpx.get(host.url + "/upstream/x").json()["path"] == "/x"
    assert httpx.get(admin + "/_lb/status").status_code == 200
    # Below the mount point the prefix is proxied like any path.
    assert httpx.get(host.url + "/upstream/_lb/status").json()["path"] == "/_lb/status"
    # Nobody runs the mounted app's lifespan: the host shuts it down, and the socket with it.
    asyncio.run_coroutine_threadsafe(balancer.shutdown(), host.loop).result(5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(admin + "/_lb/healthz")


async def test_an_admin_port_in_use_fails_the_start() -> None:
    import socket

    from lb.app import LoadBalancer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = pool_config(["http://127.0.0.1:9"])
        config["admin"] = {"listen": f"127.0.0.1:{port}"}
        balancer = LoadBalancer(config)
        message = f"admin.listen http://127.0.0.1:{port}: Address already in use"
        with pytest.raises(OSError, match=message):
            await balancer.startup()
        await balancer.shutdown()
