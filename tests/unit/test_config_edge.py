"""SPEC section 11's config keys: body limits, route allow/deny, admin.listen, error_file."""

from __future__ import annotations

import ipaddress

import pytest

from lb.config import ConfigError, load_config

POOLS = {"web": {"backends": ["http://127.0.0.1:9001"]}}


def problems(config: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config({"pools": POOLS, **config})
    return info.value.problems


def test_sizes_networks_and_listen_are_read() -> None:
    config = load_config(
        {
            "pools": POOLS,
            "server": {"max_body_bytes": "10MiB"},
            "admin": {"listen": "[::1]:9901"},
            "logging": {"error_file": "/var/log/lb/error.log"},
            "routes": [
                {"pool": "web", "max_body_bytes": 0, "allow": ["10.0.0.0/8"], "deny": ["::1"]}
            ],
        }
    )
    assert config.server.max_body_bytes == 10 * 1024 * 1024
    assert config.admin.listen == ("::1", 9901)
    assert config.logging.error_file == "/var/log/lb/error.log"
    route = config.routes[0]
    assert route.max_body_bytes == 0
    assert route.allow == (ipaddress.ip_network("10.0.0.0/8"),)
    assert route.deny == (ipaddress.ip_network("::1/128"),)


def test_absent_means_no_limit_no_filter_and_admin_on_the_traffic_port() -> None:
    config = load_config({"pools": POOLS, "routes": [{"pool": "web"}]})
    assert config.server.max_body_bytes is None
    assert config.routes[0].max_body_bytes is None
    assert config.routes[0].allow == config.routes[0].deny == ()
    assert config.admin.listen is None


def test_bad_values_are_reported_with_their_key_path() -> None:
    found = problems(
        {
            "server": {"max_body_bytes": "lots"},
            "admin": {"listen": "localhost:9901"},
            "routes": [{"pool": "web", "allow": ["10.0.0.1/8", "nope"], "deny": "10.0.0.0/8"}],
        }
    )
    assert any(p.startswith("server.max_body_bytes: ") for p in found)
    assert any(p.startswith("admin.listen: expected HOST:PORT") for p in found)
    bits = "routes[0].allow[0]: '10.0.0.1/8' has host bits set (did you mean '10.0.0.0/8'?)"
    assert bits in found
    assert "routes[0].allow[1]: not an IP network: 'nope'" in found
    assert "routes[0].deny: expected a list, got '10.0.0.0/8'" in found


@pytest.mark.parametrize("listen", ["9901", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":99"])
def test_listen_needs_an_address_and_a_port(listen: str) -> None:
    assert any(p.startswith("admin.listen: ") for p in problems({"admin": {"listen": listen}}))
