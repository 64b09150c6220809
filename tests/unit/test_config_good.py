"""load_config on valid input: the SPEC example, defaults, normalisation and env expansion."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest

from lb.config import (
    DEFAULT_REDIS_URL,
    AdminConfig,
    CacheConfig,
    Config,
    HealthCheckConfig,
    PassiveHealthConfig,
    RateLimitConfig,
    RetryConfig,
    StickyConfig,
    TimeoutConfig,
    default_config_path,
    load_config,
)

SPEC_EXAMPLE = """\
trusted_proxies: [10.0.0.0/8]      # peers whose X-Forwarded-For is believed; default: none
pools:
  web:
    strategy: round_robin
    hash_key: client_ip
    backends:
      - url: http://127.0.0.1:9001
        weight: 3                  # default 1
        id: a                      # default "host:port"
      - http://127.0.0.1:9002      # shorthand, weight 1
    sticky: {cookie: lb_sticky, max_age: 1h}          # absent: off
    health_check: {path: /health, interval: 5s, timeout: 2s, healthy_threshold: 2,
                   unhealthy_threshold: 3, expected_status: "200-399"}   # absent: off
    passive_health: {max_failures: 3, ejection_time: 30s, max_ejection_percent: 50}
    retries: {attempts: 2, retry_on: [connect_error, timeout, 502, 503, 504], budget_percent: 20}
    timeouts: {connect: 2s, read: 30s, pool: 5s}   # these are the defaults
    preserve_host: true
routes:
  - {host: "api.example.com", path_prefix: /v1, pool: web, strip_prefix: false}
rate_limit:
  rate: 10
  burst: 20
  key: client_ip
  store: memory
  redis_url: redis://127.0.0.1:6379/0
  on_store_error: allow
  max_keys: 100000
cache:
  store: memory
  max_entries: 10000
  max_bytes: 64MiB
  max_entry_bytes: 1MiB
  default_ttl: 0
admin:
  path_prefix: /_lb
  token: ${LB_ADMIN_TOKEN}
  allow: [127.0.0.0/8, "::1/128"]
metrics: {path: /_lb/metrics}
logging: {access_log: true, format: json, level: info}
"""


def minimal(**pool: Any) -> dict[str, Any]:
    return {"pools": {"web": {"backends": ["http://127.0.0.1:9001"], **pool}}}


def test_spec_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_ADMIN_TOKEN", "s3cret")
    monkeypatch.delenv("LB_REDIS_URL", raising=False)
    path = tmp_path / "config.yaml"
    path.write_text(SPEC_EXAMPLE)
    config = load_config(path)

    assert config.source == str(path.resolve())
    assert config.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)
    web = config.pools["web"]
    assert [(b.url, b.id, b.weight) for b in web.backends] == [
        ("http://127.0.0.1:9001", "a", 3),
        ("http://127.0.0.1:9002", "127.0.0.1:9002", 1),
    ]
    assert web.name == "web" and web.strategy == "round_robin" and web.hash_key == "client_ip"
    assert web.sticky == StickyConfig(cookie="lb_sticky", max_age=3600.0)
    assert web.health_check == HealthCheckConfig(
        path="/health", interval=5.0, timeout=2.0, expected_status=((200, 399),)
    )
    assert web.passive_health == PassiveHealthConfig(3, 30.0, 50.0)
    assert web.retries.retry_on == frozenset({"connect_error", "timeout", "502", "503", "504"})
    assert web.timeouts == TimeoutConfig(connect=2.0, read=30.0, pool=5.0, total=None)
    (route,) = config.routes
    assert (route.host, route.path_prefix, route.pool, route.strip_prefix) == (
        "api.example.com",
        "/v1",
        "web",
        False,
    )
    assert route.rate_limit is None and route.cache is True
    assert config.rate_limit == RateLimitConfig(rate=10.0, burst=20, max_keys=100_000)
    assert config.cache == CacheConfig(
        max_entries=10_000, max_bytes=64 * 2**20, max_entry_bytes=2**20, default_ttl=0.0
    )
    assert config.admin.token == "s3cret"
    assert config.admin.allow == AdminConfig().allow
    assert config.metrics.path == "/_lb/metrics"
    assert config.summary() == "1 pool(s), 2 backend(s), 1 route(s), rate_limit, cache on"


def test_spec_example_without_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LB_ADMIN_TOKEN", raising=False)
    path = tmp_path / "config.yaml"
    path.write_text(SPEC_EXAMPLE)
    assert load_config(path).admin.token is None


def test_relative_path_becomes_absolute_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("lb.yaml").write_text("pools: {web: {backends: [http://a]}}\n")
    assert load_config("lb.yaml").source == os.path.join(str(tmp_path), "lb.yaml")


def test_defaults_of_a_minimal_config() -> None:
    config = load_config(minimal())
    assert config.source is None
    web = config.pools["web"]
    assert web.strategy == "round_robin" and web.strategy_options == {}
    assert web.sticky is None and web.health_check is None and web.passive_health is None
    assert web.retries == RetryConfig(attempts=2, retry_on=frozenset({"connect_error"}))
    assert web.timeouts == TimeoutConfig()
    assert web.preserve_host is True and web.slow_start == 0.0 and web.panic_threshold == 0.0
    assert config.routes == () and config.trusted_proxies == ()
    assert config.rate_limit is None and config.cache is None
    assert config == Config(pools={"web": web})


@pytest.mark.parametrize("key", ["sticky", "health_check", "passive_health"])
def test_true_means_defaults_and_false_or_null_means_off(key: str) -> None:
    default = {
        "sticky": StickyConfig(),
        "health_check": HealthCheckConfig(),
        "passive_health": PassiveHealthConfig(),
    }[key]
    assert getattr(load_config(minimal(**{key: True})).pools["web"], key) == default
    assert getattr(load_config(minimal(**{key: False})).pools["web"], key) is None
    assert getattr(load_config(minimal(**{key: None})).pools["web"], key) is None


def test_cache_header_switches() -> None:
    cache = {
        "targeted_fields": ["LB-Cache-Control", "CDN-Cache-Control", "lb-cache-control"],
        "heuristic": True,
        "store_set_cookie": True,
    }
    loaded = load_config({**minimal(), "cache": cache}).cache
    assert loaded is not None
    assert loaded.targeted_fields == ("lb-cache-control", "cdn-cache-control")
    assert loaded.heuristic and loaded.store_set_cookie
    defaults = CacheConfig()
    assert defaults.targeted_fields == ("cdn-cache-control",)
    assert not defaults.heuristic and not defaults.store_set_cookie
    off = load_config({**minimal(), "cache": {"targeted_fields": []}}).cache
    assert off is not None and off.targeted_fields == ()


def test_cache_true_means_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LB_REDIS_URL", raising=False)
    assert load_config({**minimal(), "cache": True}).cache == CacheConfig()
    assert load_config({**minimal(), "cache": False}).cache is None


@pytest.mark.parametrize(
    ("url", "normalised", "backend_id"),
    [
        ("http://127.0.0.1:9001", "http://127.0.0.1:9001", "127.0.0.1:9001"),
        ("http://Example.COM", "http://example.com:80", "example.com:80"),
        ("HTTPS://example.com/", "https://example.com:443", "example.com:443"),
        ("http://[::1]:9000/", "http://[::1]:9000", "[::1]:9000"),
        ("http://[0:0::1]", "http://[::1]:80", "[::1]:80"),
        ("https://api.internal:8443", "https://api.internal:8443", "api.internal:8443"),
        ("http://my_service:80", "http://my_service:80", "my_service:80"),
        ("  http://a:1  ", "http://a:1", "a:1"),
    ],
)
def test_backend_url_normalisation(url: str, normalised: str, backend_id: str) -> None:
    (backend,) = load_config({"pools": {"p": {"backends": [url]}}}).pools["p"].backends
    assert (backend.url, backend.id) == (normalised, backend_id)


def test_backend_weight_zero_and_numeric_id() -> None:
    backends = [{"url": "http://a", "weight": 0, "id": 1}, {"url": "http://b", "id": "b"}]
    pool = load_config({"pools": {"p": {"backends": backends}}}).pools["p"]
    assert [(b.id, b.weight) for b in pool.backends] == [("1", 0), ("b", 1)]


@pytest.mark.parametrize(
    ("value", "ranges"),
    [
        (200, ((200, 200),)),
        ("200-399", ((200, 399),)),
        ("200,204,300-399", ((200, 200), (204, 204), (300, 399))),
        ([200, "300-302"], ((200, 200), (300, 302))),
        (" 200 - 299 ", ((200, 299),)),
    ],
)
def test_expected_status(value: object, ranges: tuple[tuple[int, int], ...]) -> None:
    check = load_config(minimal(health_check={"expected_status": value})).pools["web"]
    assert check.health_check is not None
    assert check.health_check.expected_status == ranges


def test_health_check_timeout_may_exceed_interval() -> None:
    # As in Envoy and HAProxy (SPEC 5): checks of one backend never overlap, so a check may take
    # longer than the wait between two.
    check = load_config(minimal(health_check={"interval": "250ms", "timeout": "2s"}))
    assert check.pools["web"].health_check == HealthCheckConfig(interval=0.25, timeout=2.0)


def test_pool_details() -> None:
    pool = load_config(
        minimal(
            strategy="lb.strategy.load:LeastLatency",
            strategy_options={"decay": "10s", "choices": 3},
            hash_key="header:X-User-ID",
            health_check={"method": "head", "host": "internal", "jitter": 0},
            retries={"retry_on": [502, "503"], "per_try_timeout": "500ms", "budget_percent": 0},
            timeouts={"total": "1m"},
            slow_start="30s",
            panic_threshold=50,
        )
    ).pools["web"]
    assert pool.strategy == "lb.strategy.load:LeastLatency"
    assert pool.strategy_options == {"decay": "10s", "choices": 3}
    assert pool.hash_key == "header:x-user-id"
    assert pool.health_check == HealthCheckConfig(method="HEAD", host="internal", jitter=0.0)
    assert pool.retries == RetryConfig(
        retry_on=frozenset({"502", "503"}), per_try_timeout=0.5, budget_percent=0.0
    )
    assert pool.timeouts.total == 60.0
    assert pool.slow_start == 30.0 and pool.panic_threshold == 50.0


@pytest.mark.parametrize(
    ("host", "path_prefix", "expected"),
    [
        ("API.Example.com:8080", "/v1/", ("api.example.com", "/v1")),
        ("*.Example.com", "/", ("*.example.com", "/")),
        ("[::1]:8080", "//", ("[::1]", "/")),
        (None, "/static/img/", (None, "/static/img")),
    ],
)
def test_route_normalisation(host: str | None, path_prefix: str, expected: tuple[Any, str]) -> None:
    data = {**minimal(), "routes": [{"pool": "web", "host": host, "path_prefix": path_prefix}]}
    (route,) = load_config(data).routes
    assert (route.host, route.path_prefix) == expected


def test_route_rate_limit_merges_over_top_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_REDIS_URL", "redis://cache:6379/1")
    data = {
        **minimal(),
        "rate_limit": {"rate": 10, "burst": 20, "key": "header:X-Key", "store": "redis"},
        "routes": [
            {"pool": "web", "path_prefix": "/a", "rate_limit": {"burst": 5}},
            {"pool": "web", "path_prefix": "/b", "rate_limit": False},
            {"pool": "web", "path_prefix": "/c"},
            {"pool": "web", "path_prefix": "/d", "cache": False},
        ],
    }
    config = load_config(data)
    top = RateLimitConfig(
        rate=10.0, burst=20, key="header:x-key", store="redis", redis_url="redis://cache:6379/1"
    )
    assert config.rate_limit == top
    a, b, c, d = config.routes
    assert a.rate_limit == RateLimitConfig(
        rate=10.0, burst=5, key="header:x-key", store="redis", redis_url="redis://cache:6379/1"
    )
    assert b.rate_limit is False and c.rate_limit is None
    assert d.cache is False and a.cache is True


def test_route_rate_limit_without_top_level() -> None:
    data = {**minimal(), "routes": [{"pool": "web", "rate_limit": {"rate": 0.5, "burst": 1}}]}
    config = load_config(data)
    assert config.rate_limit is None
    assert config.routes[0].rate_limit == RateLimitConfig(rate=0.5, burst=1)


def test_redis_url_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    limit = {"rate": 1, "burst": 1}
    monkeypatch.delenv("LB_REDIS_URL", raising=False)
    assert load_config({**minimal(), "rate_limit": limit}).rate_limit == RateLimitConfig(1.0, 1)
    monkeypatch.setenv("LB_REDIS_URL", "rediss://r.example:6380/2")
    config = load_config({**minimal(), "rate_limit": limit, "cache": True})
    assert config.rate_limit is not None and config.cache is not None
    assert config.rate_limit.redis_url == config.cache.redis_url == "rediss://r.example:6380/2"
    explicit = load_config({**minimal(), "cache": {"redis_url": "unix:///run/redis.sock"}})
    assert explicit.cache is not None and explicit.cache.redis_url == "unix:///run/redis.sock"
    assert DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"


def test_bad_lb_redis_url_matters_only_for_the_redis_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LB_REDIS_URL", "localhost")
    assert load_config({**minimal(), "cache": True}).cache == CacheConfig()
    with pytest.raises(Exception, match="cache.redis_url: from \\$LB_REDIS_URL: expected"):
        load_config({**minimal(), "cache": {"store": "redis"}})


def test_env_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_HOST", "10.1.2.3")
    monkeypatch.setenv("READ_TIMEOUT", "45s")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    data = {
        "pools": {
            "web": {
                "backends": ["http://${BACKEND_HOST}:8080"],
                "timeouts": {"read": "${READ_TIMEOUT}"},
            }
        },
        "admin": {"token": "${UNSET_VAR}"},
        "logging": {"file": "/var/log/$${HOME}/x${UNSET_VAR}.log"},
    }
    config = load_config(data)
    assert config.pools["web"].backends[0].url == "http://10.1.2.3:8080"
    assert config.pools["web"].timeouts.read == 45.0
    assert config.admin.token is None
    assert config.logging.file == "/var/log/${HOME}/x.log"
    assert data["admin"] == {"token": "${UNSET_VAR}"}  # the caller's mapping is not modified


def test_sections_and_networks() -> None:
    config = load_config(
        {
            **minimal(),
            "trusted_proxies": ["10.0.0.0/8", "192.168.1.7", "fd00::/8"],
            "admin": {"path_prefix": "/admin", "token": "t", "allow": []},
            "logging": {"access_log": False, "format": "TEXT", "level": "Debug", "file": None},
            "server": {
                "graceful_timeout": 0,
                "max_header_bytes": "64KiB",
                "watch_config": True,
                "error_detail": "full",
            },
        }
    )
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert config.admin == AdminConfig(path_prefix="/admin", token="t", allow=())
    assert (config.logging.access_log, config.logging.format, config.logging.level) == (
        False,
        "text",
        "debug",
    )
    assert config.server.graceful_timeout == 0.0 and config.server.max_header_bytes == 65536
    assert config.server.watch_config is True and config.server.error_detail == "full"
    assert load_config(minimal()).server.error_detail == "minimal"


def test_config_is_returned_as_is() -> None:
    config = load_config(minimal())
    assert load_config(config) is config


@pytest.mark.parametrize(
    ("value", "expected"), [(None, "./config.yaml"), ("", "./config.yaml"), ("/etc/lb.yaml", None)]
)
def test_default_config_path(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("LB_CONFIG", raising=False)
    else:
        monkeypatch.setenv("LB_CONFIG", value)
    assert default_config_path() == (expected or value)
