"""The admin API against clients without the token or from elsewhere, trying the doors the
integration tests do not: odd spellings of admin paths, odd Authorization headers, spoofed
forwarding headers. None may read the status, change a backend, purge the cache or reload.
(tests/integration/test_admin.py covers the plain 401/403 rules for every endpoint.)"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml

from conftest import pool_config
from servers import raw_request

TOKEN = "s3cret-token"
GOOD = {"authorization": f"Bearer {TOKEN}"}
CACHED = "/cache/c?h=cache-control:max-age=600"


@pytest.fixture(scope="module")
def guarded(module_backends, module_balancer, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Token asked, cache on, a warm cache entry, and a pending change in the config file that
    a reload getting through would make live. Shared by the module: every test must leave it
    as it found it, which `unchanged` checks after each."""
    backends = module_backends(2)
    config = pool_config([{"url": s.url, "id": app.name} for app, s in backends])
    config.update(admin={"token": TOKEN}, cache={}, metrics={"path": "/metrics"})
    path = tmp_path_factory.mktemp("guarded") / "lb.yaml"
    path.write_text(yaml.safe_dump(config))
    lb = module_balancer(str(path))
    with httpx.Client(base_url=lb.url) as client:
        client.get(CACHED)
        assert client.get(CACHED).headers["x-cache"] == "HIT"
    pending = {**config, "pools": {"web": {"backends": [backends[0][1].url]}}}
    path.write_text(yaml.safe_dump(pending))
    return backends, lb


def unchanged(lb: Any) -> None:
    """Nothing the admin API can change has changed."""
    status = httpx.get(lb.url + "/_lb/status", headers=GOOD).json()
    backends = status["pools"]["web"]["backends"]
    assert [b["id"] for b in backends] == ["b1", "b2"]  # not reloaded
    assert {b["state"] for b in backends} == {"healthy"} and {b["weight"] for b in backends} == {1}
    assert httpx.get(lb.url + CACHED).headers["x-cache"] == "HIT"  # not purged


PATH_SPELLINGS = [
    "/_lb/status/",
    "/_lb//status",
    "/_lb/./status",
    "/_lb/%73tatus",
    "/_lb/status%2f",
    "/_LB/status",
    "/%5Flb/status",
    "/_lb/status;a=b",
    "/_lb/x/../status",
    "//_lb/status",
    "/_lb/status?token=" + TOKEN,
    "/metrics/",
    "/%6detrics",
]


@pytest.mark.parametrize("path", PATH_SPELLINGS)
def test_odd_spellings_of_admin_paths_read_nothing(guarded, path: str) -> None:  # type: ignore[no-untyped-def]
    backends, lb = guarded
    response = raw_request(lb.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    # Refused, unknown, or a plain proxied request that a backend answered: never lb's own data.
    assert b'"pools"' not in response.body and b"lb_requests_total" not in response.body
    assert response.status in (401, 404, 200), response.status
    if response.status == 200:
        assert response.header("x-backend") in ("b1", "b2")
    unchanged(lb)


CHANGES = [
    ("DELETE", "/_lb/cache"),
    ("DELETE", "/_lb/cache/"),
    ("DELETE", "/_lb//cache"),
    ("DELETE", "/_lb/%63ache"),
    ("DELETE", "/_LB/cache"),
    ("DELETE", "/_lb/cache?path=" + CACHED),
    ("PATCH", "/_lb/pools/web/backends/b1"),
    ("PATCH", "/_lb/pools/web/backends/b1/"),
    ("PATCH", "/_lb/pools/%77eb/backends/b1"),
    ("POST", "/_lb/reload"),
    ("POST", "/_lb/reload/"),
    ("POST", "/_lb//reload"),
]
AUTHORIZATIONS = [
    None,
    f"bearer {TOKEN}",
    f"Bearer  {TOKEN}",
    f"Bearer {TOKEN} ",
    f"Basic {TOKEN}",
    f"Bearer {TOKEN[:-1]}",
    f"Bearer {TOKEN.upper()}",
]


@pytest.mark.parametrize(("method", "path"), CHANGES)
@pytest.mark.parametrize("authorization", AUTHORIZATIONS)
def test_changes_without_the_exact_token_change_nothing(  # type: ignore[no-untyped-def]
    guarded, method: str, path: str, authorization: str | None
) -> None:
    backends, lb = guarded
    body = b'{"state": "disabled", "weight": 5}' if method == "PATCH" else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    if authorization is not None:
        head += f"Authorization: {authorization}\r\n"
    response = raw_request(lb.port, head.encode() + b"\r\n" + body)
    assert response.status in (401, 404, 405, 200), response.status
    if response.status == 200:  # proxied as a plain request, to a backend
        assert response.header("x-backend") in ("b1", "b2")
    unchanged(lb)


def test_forwarding_headers_from_an_untrusted_peer_do_not_open_the_allow_list(
    start_backends, start_balancer
) -> None:  # type: ignore[no-untyped-def]
    backends = start_backends(1)
    config = pool_config([backends[0][1].url])
    # The allow list holds 10/8 and trusted proxies are configured, but not the peer (loopback).
    config.update(trusted_proxies=["192.0.2.0/24"], admin={"allow": ["10.0.0.0/8"]})
    lb = start_balancer(config)
    spoofs = [
        {"x-forwarded-for": "10.1.2.3"},
        {"x-forwarded-for": "10.1.2.3, 192.0.2.1"},
        {"x-real-ip": "10.1.2.3"},
        {"forwarded": "for=10.1.2.3"},
    ]
    for headers in spoofs:
        assert httpx.get(lb.url + "/_lb/status", headers=headers).status_code == 403
        patch = httpx.patch(
            lb.url + f"/_lb/pools/web/backends/{backends[0][1].url[7:]}",
            json={"state": "disabled"},
            headers=headers,
        )
        assert patch.status_code == 403
    assert {b.state for b in lb.app.generation.pools["web"].backends.values()} == {"healthy"}
