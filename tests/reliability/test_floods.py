"""Floods of distinct keys: thousands of rate-limit keys, cache targets, Vary variants and
uncacheable targets, each keeping the balancer's tables within their configured bounds.

Bounds are measured on the stores themselves (entry counts, bytes, key lengths), not on time
or on process memory, which would hide a slow leak in noise.
"""

from __future__ import annotations

import pytest

from conftest import pool_config
from lb.cache.cache import _UNCACHEABLE_MAX
from lb.cache.store import MAX_VARIANTS
from lb.ratelimit.middleware import MAX_KEY_CHARS
from servers import wait_until
from wrkload import run_wrk

pytestmark = pytest.mark.slow

FLOOD = 6000


def test_a_flood_of_rate_limit_keys_keeps_the_table_at_max_keys(nginx, start_balancer) -> None:  # type: ignore[no-untyped-def]
    config = pool_config(nginx.urls)
    config["rate_limit"] = {"rate": 1000, "burst": 1000, "key": "header:x-api-key", "max_keys": 500}
    lb = start_balancer(config)
    (store,) = lb.app.generation.rate_limits.stores.values()
    short = run_wrk(lb.url, requests=FLOOD, connections=32, header="X-Api-Key", prefix="key-")
    # Long values (the header is the client's to choose) are kept as fixed-size digests.
    long = run_wrk(lb.url, requests=FLOOD, connections=32, header="X-Api-Key", prefix="k" * 4000)
    assert short.errors == 0 and long.errors == 0, (short.output, long.output)
    assert short.requests + long.requests >= 2 * FLOOD
    assert len(store) == 500
    assert max(len(key) for key in store._tats) <= MAX_KEY_CHARS + 2


def test_a_flood_of_cache_targets_keeps_entries_and_bytes_bounded(nginx, start_balancer) -> None:  # type: ignore[no-untyped-def]
    config = pool_config(nginx.urls)
    config["cache"] = {"max_entries": 300, "max_bytes": "16KiB", "max_entry_bytes": "4KiB"}
    lb = start_balancer(config)
    cache = lb.app.generation.cache
    result = run_wrk(lb.url, requests=FLOOD, connections=32, paths=["/cache/"], unique_path=True)
    assert result.errors == 0, result.output
    store = cache.store
    assert 0 < store.entries <= 300 and store.bytes <= 16 * 1024
    assert sum(len(variants) for variants in store._data.values()) == store.entries
    # Nothing is left behind by the requests themselves. wrk stops with requests in flight on
    # other connections (each thread stops at its share), and those end in lb as disconnects a
    # moment later, on lb's own thread: their entries go then, not necessarily by now.
    wait_until(lambda: cache.inflight == {} and cache.refreshing == {}, timeout=10)


def test_a_flood_of_vary_variants_keeps_each_target_at_max_variants(nginx, start_balancer) -> None:  # type: ignore[no-untyped-def]
    config = pool_config(nginx.urls)
    config["cache"] = {"max_entries": 10_000}
    lb = start_balancer(config)
    store = lb.app.generation.cache.store
    result = run_wrk(lb.url, requests=FLOOD, connections=32, paths=["/vary/x"], header="X-Variant")
    assert result.errors == 0, result.output
    assert len(store._data) == 1  # one target ...
    assert store.entries == MAX_VARIANTS  # ... with at most MAX_VARIANTS of its variants


def test_a_flood_of_uncacheable_targets_keeps_the_marks_bounded(nginx, start_balancer) -> None:  # type: ignore[no-untyped-def]
    config = pool_config(nginx.urls)
    config["cache"] = {}
    lb = start_balancer(config)
    cache = lb.app.generation.cache
    result = run_wrk(
        lb.url,
        requests=_UNCACHEABLE_MAX + 2000,
        connections=32,
        paths=["/nocache/"],
        unique_path=True,
    )
    assert result.errors == 0, result.output
    assert cache.store.entries == 0
    assert len(cache._uncacheable) == _UNCACHEABLE_MAX
