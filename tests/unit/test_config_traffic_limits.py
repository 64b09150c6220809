"""load_config for a route's `mirror` and a pool's `limits`: what is accepted, and each problem
with its key path."""

from __future__ import annotations

from typing import Any

import pytest

from lb.config import ConfigError, MirrorConfig, PoolLimitsConfig, load_config


def two_pools(route: dict[str, Any], **web: Any) -> dict[str, Any]:
    return {
        "pools": {
            "web": {"backends": ["http://127.0.0.1:9001"], **web},
            "shadow": {"backends": ["http://127.0.0.1:9002"]},
        },
        "routes": [{"pool": "web", **route}],
    }


def problems_of(source: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return info.value.problems


def test_mirror_defaults_and_values() -> None:
    (route,) = load_config(two_pools({"mirror": {"pool": "shadow"}})).routes
    assert route.mirror == MirrorConfig(pool="shadow", percent=100.0)
    (route,) = load_config(
        two_pools(
            {
                "mirror": {
                    "pool": "shadow",
                    "percent": 12.5,
                    "max_in_flight": 8,
                    "max_body_bytes": "1KiB",
                }
            }
        )
    ).routes
    assert route.mirror == MirrorConfig("shadow", 12.5, 8, 1024)
    assert load_config(two_pools({})).routes[0].mirror is None


@pytest.mark.parametrize(
    ("mirror", "problem"),
    [
        ({"pool": "shadw"}, "routes[0].mirror.pool: unknown pool 'shadw' (did you mean 'shadow'?)"),
        ({"percent": 5}, "routes[0].mirror.pool: required"),
        ({"pool": "shadow", "percent": 101}, "routes[0].mirror.percent: "),
        ({"pool": "shadow", "max_in_flight": 0}, "routes[0].mirror.max_in_flight: "),
        ({"pool": "shadow", "copies": 2}, "routes[0].mirror.copies: unknown key"),
        ("shadow", "routes[0].mirror: expected a mapping with 'pool', got "),
    ],
)
def test_mirror_problems_name_their_key(mirror: Any, problem: str) -> None:
    problems = problems_of(two_pools({"mirror": mirror}))
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_limits_values() -> None:
    limits = {"max_connections": 4, "max_pending": 0, "max_requests_per_connection": 100}
    config = load_config(two_pools({}, limits=limits))
    assert config.pools["web"].limits == PoolLimitsConfig(4, 0, 100)
    assert config.pools["shadow"].limits is None
    partial = load_config(two_pools({}, limits={"max_pending": 10})).pools["web"].limits
    assert partial == PoolLimitsConfig(max_pending=10)


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ({"max_connections": 0}, "pools.web.limits.max_connections: "),
        ({"max_pending": -1}, "pools.web.limits.max_pending: "),
        ({"max_requests_per_connection": "x"}, "pools.web.limits.max_requests_per_connection: "),
        ({"max_pendin": 1}, "pools.web.limits.max_pendin: unknown key (did you mean"),
        ([1], "pools.web.limits: expected a mapping"),
    ],
)
def test_limits_problems_name_their_key(limits: Any, problem: str) -> None:
    problems = problems_of(two_pools({}, limits=limits))
    assert len(problems) == 1 and problems[0].startswith(problem), problems
