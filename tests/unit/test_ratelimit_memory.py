"""The memory store with a fake clock: exact decisions, a hard bound on keys, fair eviction."""

from __future__ import annotations

import time
import tracemalloc
from collections import OrderedDict

import pytest

from lb.ratelimit.gcra import Limit
from lb.ratelimit.memory import EVICTION_SAMPLE, MemoryStore


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_keys_have_separate_buckets() -> None:
    clock = Clock()
    store = MemoryStore(Limit(1, 2), max_keys=10, clock=clock)
    assert [store.decide_now("a").allowed for _ in range(3)] == [True, True, False]
    assert [store.decide_now("b").allowed for _ in range(3)] == [True, True, False]
    clock.now += 1
    assert store.decide_now("a").allowed
    assert not store.decide_now("a").allowed


async def test_the_async_interface_gives_the_same_answers() -> None:
    store = MemoryStore(Limit(1, 1), max_keys=10, clock=Clock())
    assert (await store.decide("k")).allowed
    rejected = await store.decide("k")
    assert not rejected.allowed and rejected.retry_after == 1


def test_never_more_than_max_keys_however_many_distinct_keys_arrive() -> None:
    clock = Clock()
    store = MemoryStore(Limit(10, 20), max_keys=1000, clock=clock)
    for i in range(100_000):
        assert store.decide_now(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}").allowed
        assert len(store) <= 1000
        clock.now += 0.0001
    assert len(store) == 1000


def test_memory_stays_bounded_and_each_decision_costs_the_same() -> None:
    clock = Clock()
    store = MemoryStore(Limit(10, 20), max_keys=10_000, clock=clock)

    def run(start: int, count: int) -> float:
        began = time.perf_counter()
        for i in range(start, start + count):
            store.decide_now(f"key-{i}")
            clock.now += 0.00001
        return time.perf_counter() - began

    tracemalloc.start()
    try:
        run(0, 10_000)  # full
        filled = tracemalloc.get_traced_memory()[0]
        first = run(10_000, 10_000)  # every insert now drops an entry
        churned = tracemalloc.get_traced_memory()[0]
        run(20_000, 70_000)
        last = run(90_000, 10_000)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(store) == 10_000
    # The dict behind the table resizes once under churn (to at most twice its slots), then
    # 80,000 more keys leave it exactly where it was.
    assert churned < filled * 1.5
    assert after < churned * 1.02
    # O(1): a decision on a full table costs the same after 100,000 keys as after 10,000.
    assert last < first * 3 + 0.05


def test_entries_already_full_again_go_before_live_ones() -> None:
    clock = Clock()
    store = MemoryStore(Limit(1, 5), max_keys=4, clock=clock)
    for _ in range(5):
        store.decide_now("limited")  # exhausted: TAT 5 s ahead
    for key in ("x", "y", "z"):
        store.decide_now(key)  # one request each: TAT 1 s ahead
    clock.now += 1.5  # x, y and z are full again; "limited" is the least recently used and live
    store.decide_now("new")
    assert len(store) == 4
    assert store.decide_now("limited").remaining == 0  # its state was kept (fresh: 4)
    assert store.evicted_live == 0


def test_a_flood_of_new_keys_does_not_free_a_limited_client() -> None:
    clock = Clock()
    store = MemoryStore(Limit(0.1, 5), max_keys=100, clock=clock)  # one per 10 s
    for _ in range(5):
        assert store.decide_now("victim").allowed
    assert not store.decide_now("victim").allowed
    # 10,000 spoofed keys within the victim's window, far more than the table holds.
    for i in range(10_000):
        clock.now += 0.0002
        store.decide_now(f"spoofed-{i}")
    assert clock.now - 1000.0 == pytest.approx(2.0)
    result = store.decide_now("victim")
    assert not result.allowed  # plain LRU would have dropped it and handed it a fresh burst
    assert result.retry_after == 8  # its next request is due 10 s after the burst
    assert len(store) == 100


def test_a_table_full_of_live_entries_drops_the_one_closest_to_full() -> None:
    clock = Clock()
    store = MemoryStore(Limit(1, 10), max_keys=3, clock=clock)
    for key, cost in (("a", 5), ("b", 1), ("c", 9)):
        for _ in range(cost):
            store.decide_now(key)
    store.decide_now("d")  # all live: "b" (TAT 1 s ahead) loses least
    assert store.evicted_live == 1
    assert store.decide_now("b").remaining == 9  # b was dropped: a fresh bucket
    assert store.decide_now("c").remaining == 0  # c was kept


def test_eviction_looks_at_a_bounded_sample() -> None:
    class Counting(OrderedDict[str, float]):
        touched = 0

        def move_to_end(self, key: str, last: bool = True) -> None:
            Counting.touched += 1
            super().move_to_end(key, last)

    clock = Clock()
    store = MemoryStore(Limit(1, 100), max_keys=1000, clock=clock)
    store._tats = Counting()
    for i in range(1000):
        for _ in range(50):
            store.decide_now(f"k{i}")  # all live for 50 s
    Counting.touched = 0
    store.decide_now("new")  # a full table of live entries: the worst case
    assert Counting.touched == EVICTION_SAMPLE
    assert len(store) == 1000 and store.evicted_live == 1


def test_repr_and_bad_bound() -> None:
    store = MemoryStore(Limit(2, 3), max_keys=5, clock=Clock())
    store.decide_now("a")
    assert repr(store) == "<MemoryStore <Limit 2/s burst=3> [1/5 keys]>"
    with pytest.raises(ValueError):
        MemoryStore(Limit(1, 1), max_keys=0)
