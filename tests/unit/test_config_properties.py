"""Properties of load_config: any JSON-like input gives a Config or a ConfigError, never a crash."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lb.config import Config, ConfigError, load_config

# Keys the validators know, so that generated configs reach past the unknown-key check.
KEYS = [
    "pools", "routes", "trusted_proxies", "rate_limit", "cache", "admin", "metrics", "logging",
    "server", "backends", "strategy", "strategy_options", "hash_key", "sticky", "health_check",
    "passive_health", "retries", "timeouts", "preserve_host", "slow_start", "panic_threshold",
    "url", "weight", "id", "cookie", "max_age", "path", "method", "interval", "timeout",
    "expected_status", "jitter", "attempts", "retry_on", "connect", "total", "host",
    "path_prefix", "pool", "rate", "burst", "key", "store", "redis_url", "max_bytes", "allow",
    "token", "format", "level", "web",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["http://a:1", "5s", "64KiB", "web", "round_robin", "header:", "10.0.0.0/8", "${X}", "/"]
    ),
)
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=30,
)


def check(data: Any) -> None:
    try:
        config = load_config(data)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError must name at least one problem"
        for line in exc.problems:
            assert "\n" not in line
            assert ": " in line
            assert "internal error" not in line, line
    else:
        assert isinstance(config, Config)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), JSON, max_size=6))
def test_arbitrary_mappings_give_config_or_config_error(data: dict[str, Any]) -> None:
    check(data)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6),
    st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6),
)
def test_near_valid_pools_give_config_or_config_error(
    pool_extra: dict[str, Any], top_extra: dict[str, Any]
) -> None:
    pool = {"backends": ["http://127.0.0.1:9001"], **pool_extra}
    check({**top_extra, "pools": {"web": pool}})


@settings(max_examples=100, deadline=None)
@given(
    st.lists(JSON, max_size=4), st.lists(st.dictionaries(st.sampled_from(KEYS), JSON), max_size=3)
)
def test_arbitrary_backends_and_routes(backends: list[Any], routes: list[Any]) -> None:
    check({"pools": {"web": {"backends": backends}}, "routes": routes})


@given(st.integers(min_value=1, max_value=5), st.integers(min_value=0, max_value=100))
def test_valid_backend_lists_load(count: int, weight: int) -> None:
    backends = [{"url": f"http://10.0.0.{i}:80", "weight": weight} for i in range(count)]
    pool = load_config({"pools": {"p": {"backends": backends}}}).pools["p"]
    assert [b.id for b in pool.backends] == [f"10.0.0.{i}:80" for i in range(count)]
    assert all(b.weight == weight for b in pool.backends)
