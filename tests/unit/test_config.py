"""load_config on bad input: every problem reported at once, one `key.path: message` line each."""

from __future__ import annotations

from typing import Any

import pytest

from lb.config import ConfigError, load_config


def pool(**overrides: Any) -> dict[str, Any]:
    return {"backends": ["http://127.0.0.1:9001"], **overrides}


def config(**overrides: Any) -> dict[str, Any]:
    return {"pools": {"web": pool()}, **overrides}


def problems_of(source: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return info.value.problems


BAD_CONFIGS: list[tuple[str, dict[str, Any], list[str]]] = [
    # --- top level
    ("no pools", {}, ["pools: required"]),
    ("empty pools", {"pools": {}}, ["pools: at least one pool is required"]),
    (
        "pools not a mapping",
        {"pools": ["web"]},
        ["pools: expected a mapping of pool names to pools, got list"],
    ),
    (
        "top-level typo",
        {"pool": {"web": pool()}},
        ["pool: unknown key (did you mean 'pools'?)", "pools: required"],
    ),
    ("unknown top-level key", config(colour="blue"), ["colour: unknown key"]),
    (
        "bad pool name",
        {"pools": {"web!": pool()}},
        ["pools.web!: invalid pool name: use letters, digits, '_', '.' and '-'"],
    ),
    (
        "pool not a mapping",
        {"pools": {"web": None}},
        ["pools.web: expected a mapping with 'backends', got null"],
    ),
    # --- backends
    ("backends missing", {"pools": {"web": {}}}, ["pools.web.backends: required"]),
    (
        "backends empty",
        {"pools": {"web": {"backends": []}}},
        ["pools.web.backends: at least one backend is required"],
    ),
    (
        "backends not a list",
        {"pools": {"web": {"backends": "http://a"}}},
        ["pools.web.backends: expected a list of backends, got 'http://a'"],
    ),
    (
        "shorthand not http",
        {"pools": {"web": {"backends": ["http://a:1", "ftp://b:2"]}}},
        ["pools.web.backends[1].url: not an http(s) URL"],
    ),
    (
        "url without scheme",
        {"pools": {"web": {"backends": [{"url": "localhost:9001"}]}}},
        ["pools.web.backends[0].url: not an http(s) URL"],
    ),
    (
        "url with path",
        {"pools": {"web": {"backends": ["http://a:1/api"]}}},
        [
            "pools.web.backends[0].url: URL must not have a path, got '/api' "
            "(use routes to map paths)"
        ],
    ),
    (
        "url with query",
        {"pools": {"web": {"backends": ["http://a:1/?x=1"]}}},
        ["pools.web.backends[0].url: URL must not have a query string"],
    ),
    (
        "url with fragment",
        {"pools": {"web": {"backends": ["http://a:1#top"]}}},
        ["pools.web.backends[0].url: URL must not have a fragment"],
    ),
    (
        "url with userinfo",
        {"pools": {"web": {"backends": ["http://u:p@a:1"]}}},
        ["pools.web.backends[0].url: URL must not contain user info (user:password@)"],
    ),
    (
        "url bad port",
        {"pools": {"web": {"backends": ["http://a:99999", "http://b:x"]}}},
        [
            "pools.web.backends[0].url: invalid port '99999'",
            "pools.web.backends[1].url: invalid port 'x'",
        ],
    ),
    (
        "url no host",
        {"pools": {"web": {"backends": ["http://:80", "http:///x"]}}},
        [
            "pools.web.backends[0].url: URL has no host",
            "pools.web.backends[1].url: URL has no host",
        ],
    ),
    (
        "unbracketed ipv6",
        {"pools": {"web": {"backends": ["http://::1:80"]}}},
        [
            "pools.web.backends[0].url: IPv6 address '::1' must be in brackets, e.g. http://[::1]:8080"
        ],
    ),
    (
        "bad ipv4",
        {"pools": {"web": {"backends": ["http://300.1.1.1"]}}},
        ["pools.web.backends[0].url: invalid IPv4 address '300.1.1.1'"],
    ),
    (
        "backend not a string or mapping",
        {"pools": {"web": {"backends": [5]}}},
        ["pools.web.backends[0]: expected a URL or a mapping with 'url', got 5"],
    ),
    (
        "backend mapping without url",
        {"pools": {"web": {"backends": [{"weight": 2}]}}},
        ["pools.web.backends[0].url: required"],
    ),
    (
        "weight not an integer",
        {"pools": {"web": {"backends": [{"url": "http://a", "weight": "x"}]}}},
        ["pools.web.backends[0].weight: expected an integer >= 0, got 'x'"],
    ),
    (
        "weight bool and negative",
        {
            "pools": {
                "web": {
                    "backends": [
                        {"url": "http://a", "weight": True},
                        {"url": "http://b", "weight": -1},
                        {"url": "http://c", "weight": 1.5},
                    ]
                }
            }
        },
        [
            "pools.web.backends[0].weight: expected an integer >= 0, got true",
            "pools.web.backends[1].weight: expected an integer >= 0, got -1",
            "pools.web.backends[2].weight: expected an integer >= 0, got 1.5",
        ],
    ),
    (
        "duplicate explicit id",
        {
            "pools": {
                "web": {
                    "backends": [
                        {"url": "http://a", "id": "a"},
                        {"url": "http://b", "id": "b"},
                        {"url": "http://c", "id": "a"},
                    ]
                }
            }
        },
        ["pools.web.backends[2].id: duplicate id 'a'"],
    ),
    (
        "duplicate default id",
        {"pools": {"web": {"backends": ["http://a:1", "http://A:1/"]}}},
        ["pools.web.backends[1]: duplicate id 'a:1' (the same URL twice? give each an 'id')"],
    ),
    (
        "backend key typo",
        {"pools": {"web": {"backends": [{"url": "http://a", "wieght": 2}]}}},
        ["pools.web.backends[0].wieght: unknown key (did you mean 'weight'?)"],
    ),
    # --- strategy and hashing
    (
        "strategy typo",
        config(pools={"web": pool(strategy="round_robbin")}),
        ["pools.web.strategy: unknown strategy 'round_robbin' (did you mean 'round_robin'?)"],
    ),
    (
        "strategy import fails",
        config(pools={"web": pool(strategy="x.y:Z")}),
        ["pools.web.strategy: cannot import 'x.y:Z': No module named 'x'"],
    ),
    (
        "strategy attribute missing",
        config(pools={"web": pool(strategy="collections:Nope")}),
        ["pools.web.strategy: cannot import 'collections:Nope': 'collections' has no 'Nope'"],
    ),
    (
        "strategy not a class",
        config(pools={"web": pool(strategy="os.path:join")}),
        ["pools.web.strategy: 'os.path:join' is not a class"],
    ),
    (
        "strategy_options not a mapping",
        config(pools={"web": pool(strategy_options=[1])}),
        ["pools.web.strategy_options: expected a mapping of option names to values, got list"],
    ),
    (
        "hash_key without a name",
        config(pools={"web": pool(hash_key="header:")}),
        ["pools.web.hash_key: 'header:' needs a name, e.g. 'header:X-User-ID'"],
    ),
    (
        "hash_key unknown",
        config(pools={"web": pool(hash_key="client-ip")}),
        [
            "pools.web.hash_key: expected client_ip, path, header:NAME, cookie:NAME or "
            "query:NAME, got 'client-ip' (did you mean 'client_ip'?)"
        ],
    ),
    # --- sticky, health, retries, timeouts
    (
        "sticky wrong type",
        config(pools={"web": pool(sticky="yes")}),
        ["pools.web.sticky: expected a mapping, true or false, got 'yes'"],
    ),
    (
        "sticky bad cookie and max_age",
        config(pools={"web": pool(sticky={"cookie": "a b", "max_age": "forever"})}),
        [
            "pools.web.sticky.cookie: invalid cookie name 'a b'",
            "pools.web.sticky.max_age: invalid duration 'forever': expected seconds or a number "
            "with unit ms, s, m or h (e.g. '250ms', '5s', '1m')",
        ],
    ),
    (
        "health_check typo",
        config(pools={"web": pool(helth_check=True)}),
        ["pools.web.helth_check: unknown key (did you mean 'health_check'?)"],
    ),
    (
        "health_check values",
        config(
            pools={
                "web": pool(
                    health_check={
                        "path": "health",
                        "method": "POST",
                        "healthy_threshold": 0,
                        "jitter": 2,
                        "interval": "0s",
                    }
                )
            }
        ),
        [
            "pools.web.health_check.path: expected a path starting with '/', got 'health'",
            "pools.web.health_check.method: expected one of GET, HEAD, OPTIONS, got 'POST'",
            "pools.web.health_check.healthy_threshold: expected an integer >= 1, got 0",
            "pools.web.health_check.jitter: expected a number between 0 and 1, got 2",
            "pools.web.health_check.interval: must be greater than 0",
        ],
    ),
    (
        "expected_status",
        config(pools={"web": pool(health_check={"expected_status": ["399-200", 600, "2xx"]})}),
        [
            "pools.web.health_check.expected_status: range '399-200' is empty "
            "(low end above high end)",
        ],
    ),
    (
        "passive_health values",
        config(
            pools={
                "web": pool(
                    passive_health={
                        "max_failures": 0,
                        "ejection_time": 0,
                        "max_ejection_percent": 150,
                    }
                )
            }
        ),
        [
            "pools.web.passive_health.max_failures: expected an integer >= 1, got 0",
            "pools.web.passive_health.ejection_time: must be greater than 0",
            "pools.web.passive_health.max_ejection_percent: expected a number between 0 and 100, "
            "got 150",
        ],
    ),
    (
        "retries values",
        config(
            pools={
                "web": pool(retries={"attempts": 0, "retry_on": ["timeout", 501, "conect_error"]})
            }
        ),
        [
            "pools.web.retries.attempts: expected an integer >= 1, got 0",
            "pools.web.retries.retry_on[1]: unknown retry condition 501; expected one of "
            "connect_error, timeout, 500, 502, 503, 504",
            "pools.web.retries.retry_on[2]: unknown retry condition 'conect_error'; expected one "
            "of connect_error, timeout, 500, 502, 503, 504 (did you mean 'connect_error'?)",
        ],
    ),
    (
        "timeouts values",
        config(pools={"web": pool(timeouts={"connect": "fast", "read": 0, "total": -1})}),
        [
            "pools.web.timeouts.connect: invalid duration 'fast': expected seconds or a number "
            "with unit ms, s, m or h (e.g. '250ms', '5s', '1m')",
            "pools.web.timeouts.read: must be greater than 0",
            "pools.web.timeouts.total: duration -1 must not be negative",
        ],
    ),
    (
        "pool scalars",
        config(pools={"web": pool(preserve_host="yes", panic_threshold=101, slow_start="-1s")}),
        [
            "pools.web.preserve_host: expected true or false, got 'yes'",
            "pools.web.panic_threshold: expected a number between 0 and 100 or false, got 101",
            "pools.web.slow_start: duration '-1s' must not be negative",
        ],
    ),
    # --- routes
    (
        "route to unknown pool",
        config(routes=[{"pool": "wbe"}]),
        ["routes[0].pool: unknown pool 'wbe' (did you mean 'web'?)"],
    ),
    ("route without pool", config(routes=[{"path_prefix": "/v1"}]), ["routes[0].pool: required"]),
    (
        "route values",
        config(routes=[{"pool": "web", "path_prefix": "v1", "host": "a.*.com", "cache": "no"}]),
        [
            "routes[0].path_prefix: expected a path starting with '/', got 'v1'",
            "routes[0].host: invalid host 'a.*.com': '*' is only allowed as the whole first "
            "label, e.g. '*.example.com'",
            "routes[0].cache: expected true or false, got 'no'",
        ],
    ),
    (
        "unreachable route",
        config(
            routes=[{"pool": "web", "path_prefix": "/v1/"}, {"pool": "web", "path_prefix": "/v1"}]
        ),
        ["routes[1]: unreachable: routes[0] has the same host and path_prefix"],
    ),
    (
        "routes not a list",
        config(routes={"pool": "web"}),
        ["routes: expected a list of routes, got mapping"],
    ),
    # --- rate limit
    (
        "rate_limit missing fields",
        config(rate_limit={"key": "client_ip"}),
        ["rate_limit.rate: required", "rate_limit.burst: required"],
    ),
    (
        "rate_limit values",
        config(
            rate_limit={
                "rate": 0,
                "burst": 20,
                "store": "redsi",
                "redis_url": "http://x",
                "key": "header:",
                "on_store_error": "block",
            }
        ),
        [
            "rate_limit.rate: expected a number > 0, got 0",
            "rate_limit.store: expected one of memory, redis, got 'redsi' (did you mean 'redis'?)",
            "rate_limit.redis_url: expected a redis://, rediss:// or unix:// URL, got 'http://x'",
            "rate_limit.key: expected client_ip or header:NAME, got 'header:'",
            "rate_limit.on_store_error: expected one of allow, deny, got 'block'",
        ],
    ),
    (
        "rate_limit true",
        config(rate_limit=True),
        ["rate_limit: expected a mapping or false, got true"],
    ),
    (
        "route rate_limit without a top-level one",
        config(routes=[{"pool": "web", "rate_limit": {"rate": 5}}]),
        ["routes[0].rate_limit.burst: required"],
    ),
    # --- cache, admin, metrics, logging, server, trusted_proxies
    (
        "cache sizes",
        config(cache={"max_bytes": "1MiB", "max_entry_bytes": "2MiB", "max_entries": 0}),
        [
            "cache.max_entry_bytes: must not exceed max_bytes",
            "cache.max_entries: expected an integer >= 1, got 0",
        ],
    ),
    (
        "cache targeted fields",
        config(cache={"targeted_fields": ["a b", "Cache-Control"], "heuristic": "yes"}),
        [
            "cache.targeted_fields[0]: expected a header field name, got 'a b'",
            "cache.targeted_fields[1]: Cache-Control is always read after the targeted fields; "
            "leave it out",
            "cache.heuristic: expected true or false, got 'yes'",
        ],
    ),
    (
        "cache bad size",
        config(cache={"max_bytes": "lots"}),
        [
            "cache.max_bytes: invalid size 'lots': expected bytes or a number with unit B, KB, "
            "KiB, MB, MiB, GB or GiB (e.g. '64KiB')"
        ],
    ),
    (
        "admin allow",
        config(admin={"allow": ["127.0.0.1", "foo", "10.0.0.1/8", 7]}),
        [
            "admin.allow[1]: not an IP network: 'foo'",
            "admin.allow[2]: '10.0.0.1/8' has host bits set (did you mean '10.0.0.0/8'?)",
            "admin.allow[3]: not an IP network: 7",
        ],
    ),
    (
        "admin path_prefix and token",
        config(admin={"path_prefix": "/_lb/", "token": 1234}),
        [
            "admin.path_prefix: expected a path like '/_lb' (no trailing '/', '?' or '#'), "
            "got '/_lb/'",
            "admin.token: expected a string, got 1234 (quote it in YAML)",
        ],
    ),
    (
        "metrics and logging",
        config(metrics={"path": "metrics"}, logging={"format": "jsno", "level": "verbose"}),
        [
            "metrics.path: expected a path starting with '/', got 'metrics'",
            "logging.format: expected one of json, text, got 'jsno' (did you mean 'json'?)",
            "logging.level: expected one of debug, info, warning, error, critical, got 'verbose'",
        ],
    ),
    (
        "server values",
        config(
            server={
                "keepalive_timeout": -1,
                "max_header_bytes": 0,
                "watch_config": 1,
                "error_detail": "ful",
            }
        ),
        [
            "server.keepalive_timeout: duration -1 must not be negative",
            "server.max_header_bytes: must be at least 1 bytes",
            "server.watch_config: expected true or false, got 1",
            "server.error_detail: expected one of minimal, full, got 'ful' (did you mean 'full'?)",
        ],
    ),
    (
        "trusted_proxies not a list",
        config(trusted_proxies="10.0.0.0/8"),
        ["trusted_proxies: expected a list, got '10.0.0.0/8'"],
    ),
    (
        "section not a mapping",
        config(logging="debug"),
        ["logging: expected a mapping, got 'debug'"],
    ),
    # --- env expansion
    (
        "bad variable reference",
        config(admin={"token": "${LB ADMIN}"}),
        [
            "admin.token: bad variable reference '${LB ADMIN}': expected ${NAME} "
            "(write $${ for a literal '${')"
        ],
    ),
    (
        "unclosed variable reference",
        config(admin={"token": "${LB_ADMIN"}),
        ["admin.token: unclosed '${' (write $${ for a literal '${')"],
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"), [case[1:] for case in BAD_CONFIGS], ids=[case[0] for case in BAD_CONFIGS]
)
def test_bad_config_is_reported(data: dict[str, Any], expected: list[str]) -> None:
    problems = problems_of(data)
    for line in expected:
        assert line in problems
    assert all("\n" not in line for line in problems)


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "pools": {
            "web": {
                "backends": ["http://a:1", "ftp://b", {"url": "http://c", "weight": "x"}],
                "strategy": "round_robbin",
                "helth_check": {},
            }
        },
        "routes": [{"pool": "wbe"}],
        "admin": {"allow": ["127.0.0.1", "foo"]},
    }
    problems = problems_of(data)
    assert problems == [
        "pools.web.helth_check: unknown key (did you mean 'health_check'?)",
        "pools.web.backends[1].url: not an http(s) URL",
        "pools.web.backends[2].weight: expected an integer >= 0, got 'x'",
        "pools.web.strategy: unknown strategy 'round_robbin' (did you mean 'round_robin'?)",
        "routes[0].pool: unknown pool 'wbe' (did you mean 'web'?)",
        "admin.allow[1]: not an IP network: 'foo'",
    ]


def test_error_string_is_the_problems_one_per_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"pool": {}})
    assert str(info.value) == "pool: unknown key (did you mean 'pools'?)\npools: required"


def test_config_error_from_one_message() -> None:
    assert ConfigError("config: x").problems == ["config: x"]


def test_route_to_a_pool_with_problems_is_not_also_unknown() -> None:
    data = {"pools": {"web": {"backends": ["ftp://a"]}}, "routes": [{"pool": "web"}]}
    assert problems_of(data) == ["pools.web.backends[0].url: not an http(s) URL"]


def test_broken_top_level_rate_limit_is_reported_once() -> None:
    data = config(rate_limit={"burst": 5}, routes=[{"pool": "web", "rate_limit": {"burst": 2}}])
    assert problems_of(data) == ["rate_limit.rate: required"]


def test_non_mapping_top_level_rate_limit_is_reported_once() -> None:
    data = config(rate_limit=0, routes=[{"pool": "web", "rate_limit": {"burst": 2}}])
    assert problems_of(data) == ["rate_limit: expected a mapping or false, got 0"]


def test_unknown_strategy_without_close_match_lists_the_choices() -> None:
    (line,) = problems_of(config(pools={"web": pool(strategy="fastest")}))
    assert line.startswith("pools.web.strategy: unknown strategy 'fastest'; expected one of ")
    assert "round_robin" in line and "'package.module:Class'" in line


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("backend", "backends"),
        ("stratgy", "strategy"),
        ("passive_healt", "passive_health"),
        ("timeout", "timeouts"),
        ("retry", "retries"),
    ],
)
def test_did_you_mean_for_pool_keys(key: str, suggestion: str) -> None:
    data = config(pools={"web": {**pool(), key: {}}})
    assert f"pools.web.{key}: unknown key (did you mean {suggestion!r}?)" in problems_of(data)
