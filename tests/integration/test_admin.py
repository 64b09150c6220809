"""SPEC section 8's admin API through a real balancer: every endpoint and every access rule."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import pool_config

TOKEN = "s3cret-token"


def _status(lb: Any, **headers: str) -> dict[str, Any]:
    response = httpx.get(lb.url + "/_lb/status", headers=headers)
    assert response.status_code == 200, response.text
    return {b["id"]: b for b in response.json()["pools"]["web"]["backends"]}


def _patch(lb: Any, backend: str, body: Any, pool: str = "web", **kw: Any) -> httpx.Response:
    return httpx.patch(f"{lb.url}/_lb/pools/{pool}/backends/{backend}", json=body, **kw)


def _spread(lb: Any, n: int = 6) -> set[str]:
    with httpx.Client(base_url=lb.url) as client:
        return {client.get("/").json()["backend"] for _ in range(n)}


@pytest.fixture
def two(start_backends, start_balancer):  # type: ignore[no-untyped-def]
    backends = start_backends(2)
    config = pool_config([{"url": s.url, "id": app.name} for app, s in backends])
    return backends, start_balancer(config)


@pytest.fixture(scope="module")
def unchanged(module_backends, module_balancer):  # type: ignore[no-untyped-def]
    """Like `two`, shared by the tests whose requests must change nothing."""
    backends = module_backends(2)
    config = pool_config([{"url": s.url, "id": app.name} for app, s in backends])
    return backends, module_balancer(config)


def _write(path: Path, config: dict[str, Any]) -> str:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    os.replace(tmp, path)
    return str(path)


def _guarded_config(backends: Any) -> dict[str, Any]:
    config = pool_config([{"url": s.url, "id": app.name} for app, s in backends])
    config["admin"] = {"token": TOKEN}
    return config


@pytest.fixture(scope="module")
def guarded(module_backends, module_balancer, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A balancer asking for a token, shared by the tests that must change nothing; read from a
    file so that a reload could be tried: (backends, lb, config path, config)."""
    backends = module_backends(2)
    config = _guarded_config(backends)
    path = tmp_path_factory.mktemp("guarded") / "lb.yaml"
    return backends, module_balancer(_write(path, config)), path, config


# -- PATCH ----------------------------------------------------------------------------------------


def test_drain_takes_a_backend_out_and_active_brings_it_back(two) -> None:  # type: ignore[no-untyped-def]
    backends, lb = two
    response = _patch(lb, "b1", {"state": "draining"})
    assert response.status_code == 200
    assert response.json() == {
        "pool": "web",
        "id": "b1",
        "url": backends[0][1].url,
        "origin": "config",
        "state": "draining",
        "admin_state": "draining",
        "weight": 1,
        # One process: the worker that took the change is every worker there is.
        "applied": {"workers": 1, "of": 1, "not_applied": []},
    }
    assert _status(lb)["b1"]["state"] == "draining"
    assert _spread(lb) == {"b2"}
    assert _patch(lb, "b1", {"state": "active"}).json()["state"] == "healthy"
    assert _spread(lb) == {"b1", "b2"}


def test_disable_and_weight(two) -> None:  # type: ignore[no-untyped-def]
    backends, lb = two
    assert _patch(lb, "b2", {"state": "disabled"}).json()["state"] == "disabled"
    assert _spread(lb) == {"b1"}
    response = _patch(lb, "b2", {"state": "active", "weight": 4})
    assert response.json()["weight"] == 4 and response.json()["state"] == "healthy"
    assert _status(lb)["b2"]["weight"] == 4
    # Weight 0 keeps a backend active but out of rotation.
    assert _patch(lb, "b1", {"weight": 0}).status_code == 200
    assert _spread(lb) == {"b2"}
    assert _status(lb)["b1"]["state"] == "healthy"


def test_active_returns_the_state_health_says(two) -> None:  # type: ignore[no-untyped-def]
    backends, lb = two
    lb.app.generation.pools["web"].backends["b1"].set_healthy(False)  # as failed checks would
    assert _patch(lb, "b1", {"state": "draining"}).json()["state"] == "draining"
    assert _patch(lb, "b1", {"state": "active"}).json()["state"] == "unhealthy"


def test_readyz_follows_drains(two) -> None:  # type: ignore[no-untyped-def]
    backends, lb = two
    assert httpx.get(lb.url + "/_lb/readyz").status_code == 200
    _patch(lb, "b1", {"state": "draining"})
    _patch(lb, "b2", {"state": "disabled"})
    response = httpx.get(lb.url + "/_lb/readyz")
    assert response.status_code == 503
    assert response.json()["pools_without_backend"] == ["web"]
    assert httpx.get(lb.url + "/").status_code == 503
    _patch(lb, "b2", {"state": "active"})
    assert httpx.get(lb.url + "/_lb/readyz").status_code == 200


@pytest.mark.parametrize(("pool", "backend"), [("nope", "b1"), ("web", "nope"), ("web", "b")])
def test_unknown_pool_or_backend_is_404(unchanged, pool: str, backend: str) -> None:  # type: ignore[no-untyped-def]
    backends, lb = unchanged
    response = _patch(lb, backend, {"state": "draining"}, pool=pool)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert {b["state"] for b in _status(lb).values()} == {"healthy"}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"state": "off"}',
        b'{"weight": -1}',
        b'{"weight": "2"}',
        b'{"state": "draining", "extra": true}',
        b"x" * 70_000,
    ],
)
def test_bad_body_is_400_with_problems_and_changes_nothing(unchanged, body: bytes) -> None:  # type: ignore[no-untyped-def]
    backends, lb = unchanged
    response = httpx.patch(lb.url + "/_lb/pools/web/backends/b1", content=body)
    assert response.status_code == 400
    data = response.json()
    assert data["error"] == "bad_request" and data["detail"]
    assert _status(lb)["b1"]["state"] == "healthy" and _status(lb)["b1"]["weight"] == 1


def test_wrong_methods_are_405_and_unknown_admin_paths_404_never_proxied(unchanged) -> None:  # type: ignore[no-untyped-def]
    backends, lb = unchanged
    before = sum(app.count() for app, _ in backends)
    assert httpx.get(lb.url + "/_lb/pools/web/backends/b1").status_code == 405
    assert httpx.get(lb.url + "/_lb/reload").status_code == 405
    assert httpx.post(lb.url + "/_lb/status").status_code == 405
    assert httpx.get(lb.url + "/_lb/nothing-here").status_code == 404
    assert sum(app.count() for app, _ in backends) == before


def test_admin_errors_are_lbs_json_errors_with_the_request_id(unchanged) -> None:  # type: ignore[no-untyped-def]
    _, lb = unchanged
    wrong = httpx.get(lb.url + "/_lb/reload", headers={"x-request-id": "admin-1"})
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.headers["cache-control"] == "no-store"
    data = wrong.json()
    assert data["error"] == "method_not_allowed" and data["request_id"] == "admin-1"
    assert wrong.headers["x-request-id"] == "admin-1" and "POST" in data["detail"]
    missing = httpx.get(lb.url + "/_lb/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert missing.json()["request_id"] == missing.headers["x-request-id"]
    unknown = httpx.patch(lb.url + "/_lb/pools/web/backends/nope", content=b'{"weight": 1}')
    assert unknown.status_code == 404 and unknown.json()["request_id"]


def test_reload_without_a_file_is_400(unchanged) -> None:  # type: ignore[no-untyped-def]
    backends, lb = unchanged
    response = httpx.post(lb.url + "/_lb/reload")
    assert response.status_code == 400
    assert "not loaded from a file" in response.json()["problems"][0]


# -- access ---------------------------------------------------------------------------------------

GUARDED = [
    ("GET", "/_lb/status", None),
    ("PATCH", "/_lb/pools/web/backends/b1", {"state": "draining"}),
    ("POST", "/_lb/reload", None),
    ("GET", "/_lb/nothing-here", None),
]


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"bearer {TOKEN}", TOKEN, "Bearer", f"Bearer {TOKEN}x"]
)
def test_without_a_valid_token_401_and_nothing_changes(  # type: ignore[no-untyped-def]
    guarded, method: str, path: str, body: Any, authorization: str | None
) -> None:
    backends, lb, config_path, config = guarded
    # A pending change in the file, which a reload that got through would make live.
    _write(config_path, {**config, "pools": {"web": {"backends": [backends[0][1].url]}}})
    headers = {"authorization": authorization} if authorization else {}
    response = httpx.request(method, lb.url + path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"
    status = _status(lb, authorization=f"Bearer {TOKEN}")
    assert sorted(status) == ["b1", "b2"]
    assert {b["state"] for b in status.values()} == {"healthy"}


def test_with_the_token_every_endpoint_works(  # type: ignore[no-untyped-def]
    start_backends, start_balancer, config_file
) -> None:
    backends = start_backends(2)
    config = _guarded_config(backends)
    lb = start_balancer(config_file(config))
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert _patch(lb, "b1", {"state": "draining"}, headers=auth).status_code == 200
    assert _status(lb, **auth)["b1"]["state"] == "draining"
    config_file({**config, "pools": {"web": {"backends": [backends[1][1].url]}}})
    response = httpx.post(lb.url + "/_lb/reload", headers=auth)
    assert response.status_code == 200 and response.json()["status"] == "reloaded"
    assert list(_status(lb, **auth)) == [backends[1][1].url.removeprefix("http://")]


def test_probes_are_open_to_everyone(guarded) -> None:  # type: ignore[no-untyped-def]
    backends, lb, _, _ = guarded
    assert httpx.get(lb.url + "/_lb/healthz").status_code == 200
    assert httpx.get(lb.url + "/_lb/readyz").status_code == 200
    assert httpx.head(lb.url + "/_lb/healthz").status_code == 200


def test_dashboard_takes_the_token_once_in_the_query(guarded) -> None:  # type: ignore[no-untyped-def]
    backends, lb, _, _ = guarded
    page = httpx.get(lb.url + "/_lb/dashboard")
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert 'name="token"' in page.text and "not valid" not in page.text
    wrong = httpx.get(lb.url + "/_lb/dashboard", params={"token": "nope"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    page = httpx.get(lb.url + "/_lb/dashboard", params={"token": TOKEN})
    assert page.status_code == 200 and "uPlot" in page.text
    # Only the page takes it there; the API wants the header.
    assert httpx.get(lb.url + "/_lb/status", params={"token": TOKEN}).status_code == 401


@pytest.fixture(scope="module")
def elsewhere(module_backends, module_balancer, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Admin allowed only from 10.0.0.0/8, which the tests' 127.0.0.1 is not in."""
    backends = module_backends(2)
    config = pool_config([{"url": s.url, "id": app.name} for app, s in backends])
    config["admin"] = {"allow": ["10.0.0.0/8"]}
    path = tmp_path_factory.mktemp("elsewhere") / "lb.yaml"
    return backends, module_balancer(_write(path, config)), path, config


@pytest.mark.parametrize(("method", "path", "body"), [*GUARDED, ("GET", "/_lb/dashboard", None)])
def test_from_a_network_not_allowed_403_and_nothing_changes(  # type: ignore[no-untyped-def]
    elsewhere, method: str, path: str, body: Any
) -> None:
    backends, lb, config_path, config = elsewhere
    _write(config_path, {**config, "pools": {"web": {"backends": [backends[0][1].url]}}})
    response = httpx.request(method, lb.url + path, json=body)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    pool = lb.app.generation.pools["web"]
    assert sorted(pool.backends) == ["b1", "b2"]
    assert {b.state for b in pool.backends.values()} == {"healthy"}
    assert httpx.get(lb.url + "/_lb/healthz").status_code == 200


def test_allow_list_uses_the_client_ip_behind_a_trusted_proxy(  # type: ignore[no-untyped-def]
    start_backends, start_balancer
) -> None:
    backends = start_backends(1)
    config = pool_config([backends[0][1].url])
    # Through a proxy, the admin API needs a token (SPEC section 11).
    config.update(trusted_proxies=["127.0.0.0/8"], admin={"allow": ["10.0.0.0/8"], "token": TOKEN})
    lb = start_balancer(config)
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.get(lb.url + "/_lb/status", headers=bearer).status_code == 403
    inside = {"x-forwarded-for": "10.1.2.3", **bearer}
    assert httpx.get(lb.url + "/_lb/status", headers=inside).status_code == 200
    outside = {"x-forwarded-for": "192.0.2.1", **bearer}
    assert httpx.get(lb.url + "/_lb/status", headers=outside).status_code == 403
