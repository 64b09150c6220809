"""The runtime and its generations: what a reload keeps, what it changes, and that a failed one
changes nothing. No sockets: the backends are never called."""

from __future__ import annotations

import asyncio
import time

import pytest

from lb.app import LoadBalancer
from lb.control.reload import ReloadError


def _config(*backends: object, **pool: object) -> dict[str, object]:
    pools = {"web": {"backends": list(backends), **pool}}
    return {"pools": pools, "logging": {"access_log": False}}


A = {"url": "http://127.0.0.1:9001", "id": "a"}
B = {"url": "http://127.0.0.1:9002", "id": "b", "weight": 4}
C = {"url": "http://127.0.0.1:9003", "id": "c"}
PASSIVE = {"max_failures": 1, "ejection_time": "60s", "max_ejection_percent": 100}
CHECK = {"path": "/health", "interval": "60s", "timeout": "1s"}
POOL = {"passive_health": PASSIVE, "health_check": CHECK, "slow_start": "60s"}


def test_the_runtime_keys_its_backends_by_pool_id_and_url() -> None:
    app = LoadBalancer(_config(A, B))
    pool = app.generation.pools["web"]
    assert app.runtime.backends == {
        ("web", "a", A["url"]): pool.backends["a"],
        ("web", "b", B["url"]): pool.backends["b"],
    }
    assert all(pool.owns(b) for b in pool.backends.values())


async def test_a_reload_keeps_the_state_of_kept_backends() -> None:
    app = LoadBalancer(_config(A, B, strategy="least_latency", **POOL))
    await app.startup()
    try:
        old = app.generation
        old_pool = old.pools["web"]
        a, b = old_pool.backends["a"], old_pool.backends["b"]
        # a: unhealthy by its checks; b: ejected by passive health, then ramping back.
        old_pool.health.checked(a, False, "status 500")
        old_pool.start(b)
        old_pool.done(b, 0.01, False)  # one failure ejects (max_failures 1)
        assert b.ejected
        ejected_until = b.ejected_until
        old_pool.start(b)  # one request in flight across the reload
        b.ramp_started = time.monotonic() - 30.0  # half-way up its ramp
        strategy_data = b.strategy_data
        assert strategy_data is not None

        await app.reload(_config(A, B, C, strategy="least_latency", **POOL))

        new_pool = app.generation.pools["web"]
        assert new_pool is not old_pool
        assert new_pool.backends["a"] is a and new_pool.backends["b"] is b
        assert a.state == "unhealthy"  # health kept
        assert b.ejected and b.ejected_until == ejected_until  # ejection kept ...
        assert b.id in new_pool.health._returns  # ... and its timer taken over
        assert not old_pool.health._returns  # the old pool's timers are gone
        assert b.active_requests == 1 and b.requests_total == 2  # in-flight and counters kept
        assert b.strategy_data is strategy_data  # the strategy's estimate kept
        assert new_pool.strategy is old_pool.strategy  # same strategy config: same strategy
        assert b.ramp_started and new_pool.health.slow_start.ramping(b)  # the ramp carries on
        assert 0 < b.weight < b.config_weight
        old_pool.done(b, 0.01, True)  # the request in flight finishes on its old pool
        assert b.active_requests == 0
        assert new_pool.owns(b) and not old_pool.owns(b)
        assert new_pool.backends["c"].state == "unhealthy"  # added: waits for its checks
    finally:
        await app.shutdown()


async def test_a_reload_that_changes_the_strategy_builds_a_new_one() -> None:
    app = LoadBalancer(_config(A, B))
    old = app.generation.pools["web"].strategy
    await app.reload(_config(A, B, strategy="least_connections"))
    assert app.generation.pools["web"].strategy is not old


async def test_a_reload_whose_service_fails_to_start_changes_nothing(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app = LoadBalancer(_config(A, B, **POOL))
    await app.startup()
    try:
        live = app.generation
        old_pool = live.pools["web"]
        services = list(app.services)
        b = old_pool.backends["b"]

        async def broken(self: object) -> None:
            raise RuntimeError("no health today")

        monkeypatch.setattr("lb.health.checker.HealthChecker.start", broken)
        with pytest.raises(ReloadError) as caught:
            await app.reload(_config(A, {**B, "weight": 9}, C, **POOL))
        assert "cannot start <HealthChecker web" in caught.value.problems[0]
        assert app.generation is live and app.services == services
        assert b.weight == 4 and b.config_weight == 4 and old_pool.owns(b)
        assert list(app.runtime.backends) == [("web", "a", A["url"]), ("web", "b", B["url"])]
    finally:
        monkeypatch.undo()
        await app.shutdown()


async def test_removed_backends_drain_on_their_old_pool() -> None:
    app = LoadBalancer(_config(A, B))
    old_pool = app.generation.pools["web"]
    b = old_pool.backends["b"]
    await app.reload(_config(A, {**B, "url": "http://127.0.0.1:9999"}))
    assert b.state == "draining" and old_pool.usable() == (old_pool.backends["a"],)
    new_b = app.generation.pools["web"].backends["b"]
    assert new_b is not b and new_b.state == "healthy"
    assert ("web", "b", B["url"]) not in app.runtime.backends


async def test_admin_overrides_are_laid_over_the_new_generation_at_the_swap() -> None:
    app = LoadBalancer(_config(A, B))
    await app.control.set_backend("web", "a", "draining", 7)
    await app.reload(_config(A, B, C))
    a = app.generation.pools["web"].backends["a"]
    assert a.state == "draining" and a.weight == 7
    # The file changes the configured weight: the file wins over the older override.
    await app.reload(_config({**A, "weight": 3}, B))
    assert a.weight == 3 and a.state == "draining"


def test_rate_limit_and_cache_share_the_runtimes_one_redis_client_per_url() -> None:
    url = "redis://127.0.0.1:1/0"
    config = {
        **_config(A),
        "rate_limit": {"rate": 5, "burst": 5, "store": "redis", "redis_url": url},
        "cache": {"store": "redis", "redis_url": url},
    }
    app = LoadBalancer(config)
    client = app.runtime.redis.get(url)
    gen = app.generation
    assert gen.cache is not None and gen.cache.store.redis is client  # type: ignore[attr-defined]
    assert [s for s in gen.services() if s is client] == [client]  # started once
    assert app.runtime.redis.get("redis://127.0.0.1:2/0") is not client


async def test_a_start_that_fails_part_way_stops_what_it_started(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A service that cannot start leaves nothing running behind the error: the services started
    before it are stopped again, and so are the metrics and the httpx client."""
    app = LoadBalancer(
        {
            **_config(A, **POOL),
            "cache": {"store": "memory"},
            "routes": [{"path_prefix": "/", "pool": "web", "cache": True}],
        }
    )
    stopped: list[str] = []

    async def broken(self: object) -> None:
        raise RuntimeError("no control today")

    from lb.cache.cache import Cache
    from lb.health.checker import HealthChecker

    real_cache_stop, real_checker_stop = Cache.stop, HealthChecker.stop

    async def cache_stop(self: Cache) -> None:
        stopped.append("cache")
        await real_cache_stop(self)

    async def checker_stop(self: HealthChecker) -> None:
        stopped.append("health")
        await real_checker_stop(self)

    monkeypatch.setattr("lb.control.runtime.Control.start", broken)
    monkeypatch.setattr(Cache, "stop", cache_stop)
    monkeypatch.setattr(HealthChecker, "stop", checker_stop)
    with pytest.raises(RuntimeError, match="no control today"):
        await app.startup()
    assert sorted(stopped) == ["cache", "health"]
    assert not app.runtime.started and app.runtime.services == []
    assert app.runtime.client.is_closed


async def test_a_reload_that_keeps_the_cache_keeps_it_running() -> None:
    config = {
        **_config(A),
        "cache": {"store": "memory"},
        "routes": [{"path_prefix": "/", "pool": "web", "cache": True}],
    }
    app = LoadBalancer(config)
    await app.startup()
    try:
        cache = app.generation.cache
        assert cache is not None
        gate = asyncio.Event()
        cache.refresh_in_background(b"k", gate.wait)
        await app.reload({**config, "pools": {"web": {"backends": [A, B]}}})
        assert app.generation.cache is cache
        assert not cache.refreshing[b"k"].done()  # not stopped: the new generation uses it
    finally:
        await app.shutdown()
    assert cache.refreshing == {}
