"""The redis cache store against a real redis-server: layout, expiry, purge, sharing between
balancers, and an outage that degrades to pass-through."""

from __future__ import annotations

import httpx
import pytest
import redis

from apps import cache_url
from conftest import pool_config
from lb.cache.entry import KEEP_STALE, Entry
from lb.cache.keys import primary_key
from lb.cache.redis_store import RedisStore, entry_key, target_key
from lb.cache.rules import ResponseInfo
from lb.cache.store import MAX_VARIANTS, StoreError
from lb.cache.vary import secondary_key
from lb.redis_client import RedisClient
from servers import wait_until

pytestmark = pytest.mark.redis

NOW = 1_700_000_000.0


def make_entry(target: bytes, host: bytes = b"h", lifetime: float = 60.0, **kw: object) -> Entry:
    headers: list[tuple[bytes, bytes]] = kw.get("headers", [(b"x", b"1")])  # type: ignore[assignment]
    info = ResponseInfo(headers)
    request: list[tuple[bytes, bytes]] = kw.get("request", [])  # type: ignore[assignment]
    return Entry(
        primary_key("GET", "http", host, target),
        200,
        headers,
        kw.get("body", b"body"),  # type: ignore[arg-type]
        response_time=NOW,
        initial_age=0.0,
        lifetime=lifetime,
        vary=info.vary,
        secondary=secondary_key(info.vary, request),
    )


async def test_redis_store_keeps_entries_with_a_ttl_and_purges_them(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(RedisClient(redis_server.url))
    raw = redis.Redis.from_url(redis_server.url)
    try:
        entry = make_entry(b"/a?b=1", body=b"y" * 10000)
        await store.put(entry, NOW)
        (back,) = await store.variants(entry.primary, NOW)
        assert back.body == entry.body and back.headers == entry.headers
        ttl = raw.pttl(entry_key(entry.primary))
        deadline = (60 + KEEP_STALE) * 1000
        assert deadline - 1000 < ttl <= deadline  # expires in redis with its storage deadline
        assert deadline - 1000 < raw.pttl(target_key(b"/a?b=1")) <= deadline
        assert len(raw.hget(entry_key(entry.primary), b"")) < 1000  # body stored compressed
        assert await store.variants(entry.primary, NOW + 61 + KEEP_STALE) == []  # past its deadline
        await store.put(make_entry(b"/a?b=1", host=b"other"), NOW)
        await store.put(make_entry(b"/c"), NOW)
        assert await store.purge(b"/a?b=1") == 2
        assert await store.variants(entry.primary, NOW) == []
        assert len(await store.variants(primary_key("GET", "http", b"h", b"/c"), NOW)) == 1
        assert await store.purge(None) == 1
        assert raw.keys(b"lb:cache:*") == []
    finally:
        raw.close()
        await store.redis.stop()


async def test_redis_store_variants_and_invalidation(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = RedisStore(RedisClient(redis_server.url))
    try:
        vary = [(b"vary", b"accept-language")]
        for i in range(MAX_VARIANTS + 3):
            request = [(b"accept-language", str(i).encode())]
            await store.put(make_entry(b"/v", headers=vary, request=request), NOW)
        primary = primary_key("GET", "http", b"h", b"/v")
        assert 0 < len(await store.variants(primary, NOW)) <= MAX_VARIANTS
        await store.invalidate([primary])
        assert await store.variants(primary, NOW) == []
        # A record that is not an entry (another version, garbage) is ignored, not an error.
        raw = redis.Redis.from_url(redis_server.url)
        raw.hset(entry_key(primary), b"", b"garbage")
        raw.close()
        assert await store.variants(primary, NOW) == []
    finally:
        await store.redis.stop()


async def test_redis_store_outage_raises_store_error_fast_then_recovers(redis_server) -> None:  # type: ignore[no-untyped-def]
    clock = [0.0]
    store = RedisStore(RedisClient(redis_server.url, clock=lambda: clock[0]))
    try:
        entry = make_entry(b"/o")
        await store.put(entry, NOW)
        redis_server.stop()
        with pytest.raises(StoreError):
            await store.variants(entry.primary, NOW)
        with pytest.raises(StoreError, match="recent failure"):
            await store.put(entry, NOW)  # not even tried within RETRY_AFTER
        assert "down" in repr(store)
        redis_server.start()
        clock[0] += 2
        await store.put(entry, NOW)
        assert len(await store.variants(entry.primary, NOW)) == 1
    finally:
        await store.redis.stop()


@pytest.fixture
def shared(start_backends, start_balancer, redis_server):  # type: ignore[no-untyped-def]
    """Two balancers with one redis cache store, one backend behind both."""
    ((backend, server),) = start_backends(1)
    config = pool_config([server.url])
    config["cache"] = {"store": "redis", "redis_url": redis_server.url}
    return backend, start_balancer(config), start_balancer(config)


def test_entries_are_shared_by_every_balancer_on_one_redis(shared) -> None:  # type: ignore[no-untyped-def]
    backend, one, two = shared
    target = cache_url("shared", "cache-control: max-age=60")
    # Both instances serve one site: the same Host reaches either.
    host = {"host": "shop.example"}
    with (
        httpx.Client(base_url=one.url, headers=host) as a,
        httpx.Client(base_url=two.url, headers=host) as b,
    ):
        assert a.get(target).headers["x-cache"] == "MISS"
        assert b.get(target).headers["x-cache"] == "HIT"
        assert a.get(target).headers["x-cache"] == "HIT"
        assert backend.count("/cache/shared") == 1
        assert a.delete("/_lb/cache", params={"path": target}).json()["purged"] == 1
        assert b.get(target).headers["x-cache"] == "MISS"  # purged for everyone
        assert a.delete("/_lb/cache").json()["purged"] == 1
        assert a.get(target).headers["x-cache"] == "MISS"


def test_redis_outage_means_pass_through(start_backends, start_balancer, redis_server) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    config = pool_config([server.url])
    config["cache"] = {"store": "redis", "redis_url": redis_server.url}
    lb = start_balancer(config)
    target = cache_url("outage", "cache-control: max-age=60")
    with httpx.Client(base_url=lb.url) as client:
        client.get(target)
        assert client.get(target).headers["x-cache"] == "HIT"
        redis_server.stop()
        for _ in range(5):
            response = client.get(target)
            assert response.status_code == 200 and response.headers["x-cache"] == "BYPASS"
        metrics = client.get("/_lb/metrics").text
        assert metric(metrics, 'lb_store_errors_total{store="cache"}') >= 5
        assert metric(metrics, 'lb_cache_requests_total{result="bypass"}') == 5
        # Purging needs the store: the admin says so instead of pretending.
        assert client.delete("/_lb/cache").status_code == 503
        redis_server.start()
        # The entry did not survive the restart (no persistence); caching resumes by itself.
        wait_until(lambda: client.get(target).headers["x-cache"] == "HIT", timeout=10)


def metric(text: str, name: str) -> float:
    """The value of one sample in Prometheus text output (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
