"""Which routes share which store, and what a reload keeps."""

from __future__ import annotations

from typing import Any

from lb.app import LoadBalancer
from lb.generation import Generation
from lb.ratelimit import RateLimit, RedisStore

URLS = ["http://127.0.0.1:9"]


def config(**top: Any) -> dict[str, Any]:
    return {
        "pools": {"web": {"backends": URLS}, "api": {"backends": URLS}},
        "routes": [
            {"path_prefix": "/a", "pool": "web"},  # inherits
            {"path_prefix": "/b", "pool": "web"},  # inherits: same zone as /a
            {"path_prefix": "/own", "pool": "api", "rate_limit": {"rate": 1, "burst": 1}},
            {"path_prefix": "/free", "pool": "api", "rate_limit": False},
        ],
        "logging": {"access_log": False},
        **top,
    }


def handlers(gen: Generation) -> dict[str, Any]:
    return {route.config.path_prefix: route.handler for route in gen.router.all()}


def test_inheriting_routes_share_the_global_zone_and_own_limits_are_apart() -> None:
    app = LoadBalancer(config(rate_limit={"rate": 10, "burst": 20}))
    by_prefix = handlers(app.generation)
    assert isinstance(by_prefix["/a"], RateLimit) and isinstance(by_prefix["/own"], RateLimit)
    assert by_prefix["/a"].store is by_prefix["/b"].store
    assert by_prefix["/own"].store is not by_prefix["/a"].store
    assert by_prefix["/own"].limit.burst == 1
    assert not isinstance(by_prefix["/free"], RateLimit)
    assert app.generation.proxies["api"] is by_prefix["/free"]
    assert sorted(name for name, _ in app.generation.rate_limits.stores) == [
        "global",
        "route:*/own",
    ]
    assert list(app.generation.services()) == []  # memory stores have no lifetime


def test_without_a_top_level_limit_only_routes_with_their_own_are_limited() -> None:
    app = LoadBalancer(config())
    by_prefix = handlers(app.generation)
    assert not isinstance(by_prefix["/a"], RateLimit)
    assert isinstance(by_prefix["/own"], RateLimit)


def test_a_reload_keeps_the_buckets_of_unchanged_zones() -> None:
    app = LoadBalancer(config(rate_limit={"rate": 10, "burst": 20}))
    first = app.generation
    same = app.runtime.build(app.config)
    assert handlers(same)["/a"].store is handlers(first)["/a"].store
    assert handlers(same)["/own"].store is handlers(first)["/own"].store
    changed = LoadBalancer(config(rate_limit={"rate": 10, "burst": 30})).config
    after = app.runtime.build(changed)
    assert handlers(after)["/a"].store is not handlers(first)["/a"].store
    assert handlers(after)["/a"].limit.burst == 30
    assert handlers(after)["/own"].store is handlers(first)["/own"].store


def test_redis_zones_share_one_connection_per_url_across_reloads() -> None:
    url = "redis://127.0.0.1:1/0"
    app = LoadBalancer(
        config(rate_limit={"rate": 5, "burst": 5, "store": "redis", "redis_url": url})
    )
    gen = app.generation
    store = handlers(gen)["/a"].store
    assert isinstance(store, RedisStore)
    assert store.prefix == "lb:rl:global:"
    # A route's own block takes the keys it lacks from the top level: redis, the same URL.
    own = handlers(gen)["/own"].store
    assert isinstance(own, RedisStore) and own.prefix == "lb:rl:route:*/own:"
    [client] = gen.services()  # the runtime's one client for the URL
    assert client is store.connection.redis is own.connection.redis is app.runtime.redis.get(url)
    connection = store.connection
    assert connection is own.connection
    changed = LoadBalancer(
        config(rate_limit={"rate": 9, "burst": 5, "store": "redis", "redis_url": url})
    ).config
    after = app.runtime.build(changed)
    assert handlers(after)["/a"].store is not store
    assert list(after.services()) == [client]
    assert handlers(after)["/a"].store.connection is connection
