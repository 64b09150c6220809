"""`POST /_lb/pools/{pool}/backends` and `DELETE .../backends/{id}` (SPEC 13): in one process, in
apps sharing a control directory (workers of an instance), under `lb serve --workers 2`, and
between instances on one Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conftest import pool_config
from lb.app import LoadBalancer
from servers import wait_until


def _config(*backends: Any, **top: Any) -> dict[str, Any]:
    return {**pool_config([{"url": s.url, "id": app.name} for app, s in backends]), **top}


def _backends(url: str, client: httpx.Client | None = None) -> dict[str, dict[str, Any]]:
    response = (client or httpx).get(url + "/_lb/status")
    return {b["id"]: b for b in response.json()["pools"]["web"]["backends"]}


def _add(url: str, body: Any, pool: str = "web") -> httpx.Response:
    return httpx.post(f"{url}/_lb/pools/{pool}/backends", json=body)


def _remove(url: str, backend: str, pool: str = "web") -> httpx.Response:
    return httpx.delete(f"{url}/_lb/pools/{pool}/backends/{backend}")


def _every_time(check: Callable[[], bool], times: int = 20) -> Callable[[], bool]:
    """Holds when `check` passes `times` times in a row (each on a fresh connection: any worker)."""
    return lambda: all(check() for _ in range(times))


def test_add_and_remove_a_backend(start_backends, start_balancer, config_file) -> None:  # type: ignore[no-untyped-def]
    (a1, s1), (a2, s2) = start_backends(2)
    lb = start_balancer(config_file(_config((a1, s1))))

    response = _add(lb.url, {"url": s2.url, "weight": 2, "id": "two"})
    assert response.status_code == 201, response.text
    assert response.json() == {
        "pool": "web",
        "id": "two",
        "url": s2.url,
        "origin": "api",
        "state": "healthy",
        "admin_state": "active",
        "weight": 2,
        "applied": {"workers": 1, "of": 1, "not_applied": []},  # one process: all there is
    }
    status = _backends(lb.url)
    assert status["two"]["origin"] == "api" and status["b1"]["origin"] == "config"
    with httpx.Client() as client:
        wait_until(
            lambda: {client.get(lb.url + "/").json()["backend"] for _ in range(6)} == {"b1", "b2"}
        )
    metrics = httpx.get(lb.url + "/_lb/metrics").text
    assert 'lb_backend_info{backend="two",origin="api",pool="web"} 1.0' in metrics

    # Without an id, the id is the one the config file would give: host:port.
    response = _add(lb.url, {"url": s2.url + "/"})
    assert response.status_code == 201 and response.json()["id"] == s2.url.removeprefix("http://")

    conflict = _add(lb.url, {"url": s2.url, "id": "b1"})
    assert conflict.status_code == 409 and conflict.json()["error"] == "conflict"
    bad = _add(lb.url, {"url": "ftp://x", "weight": "heavy", "extra": 1})
    assert bad.status_code == 400
    assert bad.json()["problems"] == [
        "extra: unknown key",
        "url: not an http(s) URL",
        "weight: expected an integer >= 0, got 'heavy'",
    ]
    assert _add(lb.url, {"url": s2.url}, pool="nope").status_code == 404

    # Kept across a reload of the file.
    assert httpx.post(lb.url + "/_lb/reload").status_code == 200
    assert "two" in _backends(lb.url)

    assert _remove(lb.url, "b1").status_code == 409  # the file's: edited there
    assert _remove(lb.url, "nope").status_code == 404
    removed = _remove(lb.url, "two")
    assert removed.status_code == 202 and removed.json()["admin_state"] == "draining"
    wait_until(lambda: "two" not in _backends(lb.url))


def test_added_backends_survive_a_reload_that_changes_the_file(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file
) -> None:
    (a1, s1), (a2, s2), (a3, s3) = start_backends(3)
    path = config_file(_config((a1, s1)))
    lb = start_balancer(path)
    assert _add(lb.url, {"url": s3.url, "id": "three"}).status_code == 201
    config_file(_config((a1, s1), (a2, s2)))
    assert httpx.post(lb.url + "/_lb/reload").json()["status"] == "reloaded"
    assert set(_backends(lb.url)) == {"b1", "b2", "three"}
    assert _backends(lb.url)["three"]["origin"] == "api"


def test_apps_sharing_a_control_dir_share_added_backends(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("LB_CONTROL_DIR", str(tmp_path / "control"))
    (a1, s1), (a2, s2) = start_backends(2)
    path = config_file(_config((a1, s1)))
    one, two = start_balancer(path), start_balancer(path)
    assert _add(one.url, {"url": s2.url, "id": "two"}).status_code == 201
    wait_until(lambda: "two" in _backends(two.url), timeout=5)
    assert _backends(two.url)["two"]["origin"] == "api"
    # A worker that starts later catches up from the control file.
    three = start_balancer(path)
    assert "two" in _backends(three.url)
    assert _remove(two.url, "two").status_code == 202
    for lb in (one, two, three):
        wait_until(lambda lb=lb: "two" not in _backends(lb.url), timeout=5)
    late = start_balancer(path)
    assert "two" not in _backends(late.url)


def test_lb_serve_workers_share_added_and_removed_backends(start_backends, lb_process) -> None:  # type: ignore[no-untyped-def]
    (a1, s1), (a2, s2) = start_backends(2)
    lb = lb_process(_config((a1, s1)), workers=2)
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(limits=limits, timeout=30) as fresh:
        assert _add(lb.url, {"url": s2.url, "id": "two"}).status_code == 201
        wait_until(_every_time(lambda: "two" in _backends(lb.url, fresh)), timeout=30)
        assert _remove(lb.url, "two").status_code == 202
        wait_until(_every_time(lambda: "two" not in _backends(lb.url, fresh)), timeout=30)
    assert lb.stop() == 0


@pytest.mark.redis
def test_instances_on_one_redis_share_added_backends(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file, redis_server, tmp_path, monkeypatch
) -> None:
    (a1, s1), (a2, s2) = start_backends(2)
    limit = {"rate": 1000, "burst": 1000, "store": "redis", "redis_url": redis_server.url}
    path = config_file(_config((a1, s1), rate_limit=limit))
    instances = []
    for name in ("east", "west"):
        monkeypatch.setenv("LB_CONTROL_DIR", str(tmp_path / name))
        instances.append(start_balancer(LoadBalancer(path)))
    east, west = instances
    assert _add(east.url, {"url": s2.url, "id": "two"}).status_code == 201
    wait_until(lambda: "two" in _backends(west.url), timeout=5)
    # West wrote it into its own control file: a worker it starts later has it too.
    assert "two" in _backends(start_balancer(LoadBalancer(path)).url)
    assert _remove(west.url, "two").status_code == 202
    wait_until(lambda: "two" not in _backends(east.url), timeout=5)
