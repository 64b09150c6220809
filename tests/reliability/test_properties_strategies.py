"""Invariants of every built-in strategy over generated pools: only usable backends are picked
(and, in panic mode, only when none is usable does that change), a retry never repeats a backend,
and weights hold in the long run."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb.backend import Backend
from lb.config import BackendConfig, PoolConfig
from lb.pool import Pool
from lb.strategy import BUILTINS, PickRequest

EXAMPLES = settings(max_examples=60, deadline=None)
STATES = ("active", "draining", "disabled")


def pool_of(
    strategy: str,
    specs: list[tuple[int, str, bool, bool]],
    panic_threshold: float | None = None,
) -> Pool:
    config = PoolConfig(
        "web",
        tuple(
            BackendConfig(f"http://10.0.0.{i + 1}:80", f"b{i}", weight)
            for i, (weight, *_) in enumerate(specs)
        ),
        strategy=strategy,
        panic_threshold=panic_threshold,
    )
    pool = Pool(config)
    for backend, (_, state, healthy, ejected) in zip(pool.backends.values(), specs, strict=True):
        backend.set_admin_state(state)  # type: ignore[arg-type]
        backend.set_healthy(healthy)
        if ejected:
            backend.set_ejected_until(1e12)
    return pool


def request(i: int) -> PickRequest:
    scope = {
        "type": "http",
        "headers": [(b"x-user", b"user-%d" % i), (b"cookie", b"sid=%d" % i)],
        "path": f"/p/{i}",
        "raw_path": b"/p/%d" % i,
        "query_string": b"user=%d" % i,
    }
    return PickRequest(scope, f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", "client_ip")


backend_specs = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from(STATES), st.booleans(), st.booleans()),
    min_size=1,
    max_size=6,
)


def run(pool: Pool, picks: int) -> list[Backend | None]:
    """`picks` requests through the pool's accounting, each finished before the next."""
    out = []
    for i in range(picks):
        backend = pool.pick(request(i))
        out.append(backend)
        if backend is not None:
            pool.start(backend)
            pool.done(backend, 0.001 * (1 + i % 3), True)
    return out


@pytest.mark.parametrize("name", sorted(BUILTINS))
@EXAMPLES
@given(specs=backend_specs)
def test_only_usable_backends_are_picked(name: str, specs: list[Any]) -> None:
    pool = pool_of(name, specs)
    usable = set(pool.usable())
    picked = run(pool, 50)
    if usable:
        assert set(picked) <= usable
    else:
        assert set(picked) == {None}  # panic mode off: nothing to pick, lb answers 503


@pytest.mark.parametrize("name", sorted(BUILTINS))
@EXAMPLES
@given(specs=backend_specs)
def test_panic_mode_spreads_over_all_only_when_none_is_usable(name: str, specs: list[Any]) -> None:
    pool = pool_of(name, specs, panic_threshold=0.0)
    usable = set(pool.usable())
    # In service: neither draining nor disabled, weight above zero (health aside).
    in_service = {b for b in pool.backends.values() if b.admin_state == "active" and b.weight}
    picked = set(run(pool, 50))
    if usable:
        assert picked <= usable
    elif in_service:
        assert pool.panic and None not in picked and picked <= in_service
    else:
        assert picked == {None}  # draining, disabled and weight 0 stay out even in panic


@pytest.mark.parametrize("name", sorted(BUILTINS))
@EXAMPLES
@given(specs=backend_specs, key=st.integers(0, 10**6))
def test_a_retry_never_picks_a_backend_already_tried(name: str, specs: list[Any], key: int) -> None:
    pool = pool_of(name, specs)
    tried: tuple[Backend, ...] = ()
    while (backend := pool.pick(request(key), tried)) is not None:
        assert backend not in tried and backend in pool.usable()
        tried += (backend,)
    assert set(tried) == set(pool.usable())


weights = st.lists(st.integers(1, 5), min_size=2, max_size=4)


@settings(max_examples=25, deadline=None)
@given(weights)
def test_smooth_weighted_round_robin_is_exact_over_every_cycle(ws: list[int]) -> None:
    pool = pool_of("weighted_round_robin", [(w, "active", True, False) for w in ws])
    picked = run(pool, sum(ws) * 3)
    for cycle in range(3):
        counts = Counter(b.id for b in picked[cycle * sum(ws) : (cycle + 1) * sum(ws)])  # type: ignore[union-attr]
        assert counts == {f"b{i}": w for i, w in enumerate(ws)}


@pytest.mark.parametrize(
    "name",
    ["random", "ip_hash", "consistent_hash", "least_connections", "power_of_two_choices"],
)
@settings(max_examples=8, deadline=None)
@given(weights)
def test_weights_hold_in_the_long_run(name: str, ws: list[int]) -> None:
    picks = 4000
    pool = pool_of(name, [(w, "active", True, False) for w in ws])
    counts = Counter(b.id for b in run(pool, picks))  # type: ignore[union-attr]
    for i, w in enumerate(ws):
        expected = picks * w / sum(ws)
        # Hashing spreads keys about as well as chance does; allow a generous band.
        assert abs(counts[f"b{i}"] - expected) < 6 * math.sqrt(expected) + 0.05 * expected, (
            counts,
            ws,
        )
