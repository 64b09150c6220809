"""SPEC section 4: each built-in strategy, exact sequences or seeded proportions, load-aware ones
driven by simulated outstanding counts and latencies on a fake clock."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from lb.backend import Backend
from lb.config import BackendConfig, PoolConfig
from lb.config.pools import BUILTIN_STRATEGIES
from lb.pool import Pool
from lb.strategy import BUILTINS, PickRequest, check_options, create_strategy, import_strategy
from lb.strategy.base import Strategy
from lb.strategy.hashing import ConsistentHash, IpHash
from lb.strategy.load import LeastConnections, LeastLatency, PowerOfTwoChoices
from lb.strategy.weighted import Random, WeightedRoundRobin


def backends(*weights: int, prefix: str = "") -> tuple[Backend, ...]:
    """Backends a, b, c, ... with these weights."""
    return tuple(
        Backend(BackendConfig(f"http://10.0.0.{i + 1}:80", f"{prefix}{chr(97 + i)}", w))
        for i, w in enumerate(weights)
    )


def request(key: str = "10.1.1.1", hash_key: str = "client_ip", **scope: Any) -> PickRequest:
    full = {"type": "http", "headers": [], "path": "/", "raw_path": b"/", "query_string": b""}
    full.update(scope)
    return PickRequest(full, key, hash_key)


REQ = request()


def ids(strategy: Strategy, pool: Sequence[Backend], n: int) -> str:
    picked = (strategy.pick(pool, REQ) for _ in range(n))
    return "".join(b.id if b is not None else "-" for b in picked)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- registry --------------------------------------------------------------------------------


def test_every_builtin_the_config_accepts_is_registered() -> None:
    assert set(BUILTINS) == set(BUILTIN_STRATEGIES)
    for name in BUILTINS:
        strategy = create_strategy(name, {})
        assert isinstance(strategy, Strategy)
        assert strategy.pick((), REQ) is None
        (only,) = backends(1)
        assert strategy.pick((only,), REQ) is only
        assert repr(strategy).startswith("<")


def test_import_strategy_refuses_a_class_without_pick() -> None:
    with pytest.raises(ValueError, match="has no pick"):
        import_strategy("collections:OrderedDict")
    with pytest.raises(ValueError, match="not a class"):
        import_strategy("os.path:join")


# --- round robin and smooth weighted round robin ---------------------------------------------


def test_round_robin_ignores_weights() -> None:
    assert ids(create_strategy("round_robin", {}), backends(5, 1, 1), 7) == "abcabca"


def test_smooth_weighted_round_robin_5_1_1() -> None:
    strategy = WeightedRoundRobin()
    assert ids(strategy, backends(5, 1, 1), 14) == "aabacaa" * 2


@pytest.mark.parametrize(
    ("weights", "expected"),
    [((1, 1, 1), "abcabc"), ((2, 1), "abaaba"), ((3, 2), "ababa" * 2), ((1, 4), "bbabb")],
)
def test_smooth_weighted_round_robin_sequences(weights: tuple[int, ...], expected: str) -> None:
    assert ids(WeightedRoundRobin(), backends(*weights), len(expected)) == expected


def test_weighted_round_robin_keeps_proportions_across_a_change() -> None:
    strategy = WeightedRoundRobin()
    a, b, c = backends(5, 1, 1)
    ids(strategy, (a, b, c), 3)
    assert ids(strategy, (a, c), 12).count("a") == 10  # 5:1 over whole cycles
    assert Counter(ids(strategy, (a, b, c), 70)) == {"a": 50, "b": 10, "c": 10}


# --- random ----------------------------------------------------------------------------------


def test_random_is_weighted_and_repeatable_with_a_seed() -> None:
    pool = backends(3, 1)
    counts = Counter(ids(Random(seed=7), pool, 20_000))
    assert abs(counts["a"] / 20_000 - 0.75) < 0.015
    assert ids(Random(seed=7), pool, 50) == ids(Random(seed=7), pool, 50)
    assert ids(Random(seed=7), pool, 50) != ids(Random(seed=8), pool, 50)


def test_random_uniform_weights_cover_every_backend_evenly() -> None:
    counts = Counter(ids(Random(seed=1), backends(1, 1, 1, 1), 20_000))
    assert set(counts) == set("abcd")
    assert all(abs(n / 20_000 - 0.25) < 0.015 for n in counts.values())


# --- least connections -----------------------------------------------------------------------


def test_least_connections_picks_the_fewest_in_flight() -> None:
    strategy = LeastConnections()
    pool = backends(1, 1, 1)
    for backend, active in zip(pool, (2, 0, 1), strict=True):
        backend.active_requests = active
    assert ids(strategy, pool, 3) == "bbb"


def test_least_connections_round_robins_ties() -> None:
    assert ids(LeastConnections(), backends(1, 1, 1), 6) == "abcabc"


def test_least_connections_weighs_in_flight_by_weight() -> None:
    strategy = LeastConnections()
    a, b = backends(3, 1)
    a.active_requests, b.active_requests = 2, 1  # 2/3 < 1/1
    assert strategy.pick((a, b), REQ) is a
    a.active_requests = 4  # 4/3 > 1/1
    assert strategy.pick((a, b), REQ) is b


def test_least_connections_shares_idle_ties_by_weight() -> None:
    # Sequential traffic never has anything in flight: every pick is a tie, shared 3:1 smoothly.
    assert ids(LeastConnections(), backends(3, 1), 8) == "aabaaaba"


def test_least_connections_equalises_simulated_load() -> None:
    strategy = LeastConnections()
    pool = backends(1, 1, 1)
    for _ in range(30):
        picked = strategy.pick(pool, REQ)
        assert picked is not None
        picked.active_requests += 1
    assert [b.active_requests for b in pool] == [10, 10, 10]


# --- power of two choices --------------------------------------------------------------------


def test_p2c_never_picks_the_most_loaded_of_three() -> None:
    strategy = PowerOfTwoChoices(seed=3)
    pool = backends(1, 1, 1)
    pool[0].active_requests, pool[1].active_requests, pool[2].active_requests = 1, 9, 2
    counts = Counter(ids(strategy, pool, 3000))
    assert counts["b"] == 0
    # a wins every pair it is in (2 of 3 pairs), c only the pair (b, c).
    assert abs(counts["a"] / 3000 - 2 / 3) < 0.04


def test_p2c_follows_weights_when_idle_and_compares_load_per_weight() -> None:
    counts = Counter(ids(PowerOfTwoChoices(seed=5), backends(3, 1), 20_000))
    assert abs(counts["a"] / 20_000 - 0.75) < 0.02
    a, b = backends(3, 1)
    a.active_requests, b.active_requests = 2, 1  # 2/3 < 1/1: a
    assert ids(PowerOfTwoChoices(seed=5), (a, b), 20) == "a" * 20


def test_p2c_draws_two_distinct_backends_by_weight() -> None:
    from lb.strategy.load import draw_two
    from lb.strategy.weighted import WeightTable

    table = WeightTable(backends(5, 1, 1, 3))
    rng = __import__("random").Random(11).random
    pairs = [draw_two(table, rng) for _ in range(20_000)]
    assert all(i != j for i, j in pairs)
    firsts = Counter(i for i, _ in pairs)
    assert abs(firsts[0] / 20_000 - 0.5) < 0.02 and abs(firsts[3] / 20_000 - 0.3) < 0.02


# --- least latency (peak EWMA) ---------------------------------------------------------------


def observe(strategy: LeastLatency, backend: Backend, seconds: float, ok: bool = True) -> None:
    strategy.on_done(backend, seconds, ok)


def test_least_latency_prefers_the_fast_backend() -> None:
    clock = FakeClock()
    strategy = LeastLatency(choices=3, clock=clock)
    a, b, c = pool = backends(1, 1, 1)
    for backend, seconds in ((a, 0.5), (b, 0.01), (c, 0.02)):
        observe(strategy, backend, seconds)
    assert ids(strategy, pool, 5) == "bbbbb"
    # In flight counts: b with 3 outstanding scores 0.04, c with none 0.02.
    b.active_requests = 3
    assert strategy.pick(pool, REQ) is c


def test_least_latency_score_is_peak_ewma_times_outstanding_plus_one() -> None:
    clock = FakeClock()
    strategy = LeastLatency(decay="10s", clock=clock)
    (a,) = backends(2)
    observe(strategy, a, 0.1)
    assert strategy.score(a, clock.now) == pytest.approx(0.1 / 2)
    a.active_requests = 3
    assert strategy.score(a, clock.now) == pytest.approx(0.1 * 4 / 2)
    a.active_requests = 0
    observe(strategy, a, 0.3)  # peak: a slower answer counts at once
    assert strategy.score(a, clock.now) == pytest.approx(0.3 / 2)
    clock.now += 10
    observe(strategy, a, 0.1)  # faster answers pull it down by the time-decayed weight
    keep = math.exp(-1)
    assert strategy.score(a, clock.now) == pytest.approx((0.3 * keep + 0.1 * (1 - keep)) / 2)


def test_least_latency_decays_idle_backends_so_they_get_probed_again() -> None:
    clock = FakeClock()
    strategy = LeastLatency(decay="1s", choices=2, clock=clock)
    fast, slow = pool = backends(1, 1)
    observe(strategy, fast, 0.01)
    observe(strategy, slow, 1.0)
    assert ids(strategy, pool, 3) == "aaa"
    clock.now += 5
    observe(strategy, fast, 0.01)  # fast keeps answering in 10ms; slow idles: 1s × e^-5 = 6.7ms
    assert strategy.pick(pool, REQ) is slow


def test_least_latency_probes_unknown_backends_one_request_at_a_time() -> None:
    clock = FakeClock()
    strategy = LeastLatency(choices=2, clock=clock)
    known, new = pool = backends(1, 1)
    observe(strategy, known, 0.05)
    assert strategy.pick(pool, REQ) is new  # no sample yet, nothing in flight: score 0
    new.active_requests = 1
    assert strategy.pick(pool, REQ) is known  # one probe at a time
    new.active_requests = 0
    observe(strategy, new, 0.2)
    assert strategy.pick(pool, REQ) is known


def test_least_latency_failures_never_make_a_backend_look_faster() -> None:
    clock = FakeClock()
    strategy = LeastLatency(clock=clock)
    (a,) = backends(1)
    observe(strategy, a, 0.2)
    observe(strategy, a, 0.001, ok=False)
    assert strategy.score(a, clock.now) == pytest.approx(0.2)


def test_least_latency_state_survives_a_new_strategy_instance() -> None:
    clock = FakeClock()
    (a,) = backends(1)
    observe(LeastLatency(clock=clock), a, 0.25)
    assert LeastLatency(clock=clock).score(a, clock.now) == pytest.approx(0.25)


def test_least_latency_samples_by_weight_with_default_two_choices() -> None:
    strategy = LeastLatency(seed=2, clock=FakeClock())
    pool = backends(1, 1, 1, 1)
    for backend in pool:
        observe(strategy, backend, 0.01)
    pool[3].active_requests = 5  # d loses every pair it is drawn into
    counts = Counter(ids(strategy, pool, 3000))
    assert counts["d"] == 0 and len(counts) == 3


@pytest.mark.parametrize(("decay", "seconds"), [(10, 10.0), ("250ms", 0.25), ("1m", 60.0)])
def test_least_latency_decay_takes_config_durations(decay: object, seconds: float) -> None:
    assert f"decay={seconds:g}s" in repr(LeastLatency(decay=decay))


# --- hashing ---------------------------------------------------------------------------------


def keys(n: int) -> list[PickRequest]:
    return [request(f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}") for i in range(n)]


def mapping(strategy: Strategy, pool: Sequence[Backend], reqs: list[PickRequest]) -> list[str]:
    out = []
    for r in reqs:
        picked = strategy.pick(pool, r)
        assert picked is not None
        out.append(picked.id)
    return out


def test_ip_hash_pins_a_key_and_spreads_keys_by_weight() -> None:
    pool = backends(1, 1, 2)
    strategy = IpHash()
    first = mapping(strategy, pool, keys(8000))
    assert mapping(IpHash(), pool, keys(8000)) == first  # another worker or instance agrees
    counts = Counter(first)
    assert abs(counts["c"] / 8000 - 0.5) < 0.03 and abs(counts["a"] / 8000 - 0.25) < 0.03


def test_consistent_hash_remaps_about_one_nth_when_a_backend_leaves_and_joins() -> None:
    pool = backends(*[1] * 10)
    reqs = keys(10_000)
    strategy = ConsistentHash()
    before = mapping(strategy, pool, reqs)
    spread = Counter(before)
    assert min(spread.values()) > 600 and max(spread.values()) < 1400  # 1000 each, give or take

    gone = pool[3]
    after_leave = mapping(strategy, pool[:3] + pool[4:], reqs)
    moved = [i for i, (x, y) in enumerate(zip(before, after_leave, strict=True)) if x != y]
    assert all(before[i] == gone.id for i in moved)  # only the leaver's keys move
    assert 0.5 / 10 < len(moved) / 10_000 < 1.6 / 10

    newcomer = backends(1, prefix="new-")[0]
    after_join = mapping(strategy, pool + (newcomer,), reqs)
    moved = [i for i, (x, y) in enumerate(zip(before, after_join, strict=True)) if x != y]
    assert all(after_join[i] == newcomer.id for i in moved)  # keys move only to the newcomer
    assert 0.5 / 11 < len(moved) / 10_000 < 1.6 / 11


def test_consistent_hash_is_the_same_in_every_process_and_for_every_history() -> None:
    pool = backends(1, 2, 1, 1)
    reqs = keys(2000)
    # One instance saw the whole pool, then lost c (it walks past c's points); another started
    # with c already gone (built without it). Both must map every key alike.
    seen_all = ConsistentHash()
    mapping(seen_all, pool, reqs)
    without_c = (pool[0], pool[1], pool[3])
    assert mapping(seen_all, without_c, reqs) == mapping(ConsistentHash(), without_c, reqs)


def test_consistent_hash_weights_give_more_keys() -> None:
    counts = Counter(mapping(ConsistentHash(), backends(1, 3), keys(8000)))
    assert abs(counts["b"] / 8000 - 0.75) < 0.06


def test_consistent_hash_retry_goes_to_the_next_backend_on_the_ring() -> None:
    pool = backends(1, 1, 1)
    strategy = ConsistentHash()
    r = request("192.168.7.7")
    home = strategy.pick(pool, r)
    assert home is not None
    rest = tuple(b for b in pool if b is not home)
    retry = strategy.pick(rest, r)
    assert retry is not None and retry is not home
    assert strategy.pick(pool, r) is home  # and the full pool maps as before


def test_consistent_hash_bounded_load_spills_a_hot_key() -> None:
    factor = 1.25
    pool = backends(1, 1, 1, 1)
    strategy = ConsistentHash(load_factor=factor)
    hot = request("hot-key")
    home = strategy.pick(pool, hot)
    assert home is not None
    # 40 concurrent requests for one key: nobody takes more than ceil(1.25 × in flight / 4).
    for in_flight in range(40):
        picked = strategy.pick(pool, hot)
        assert picked is not None
        assert picked.active_requests < math.ceil(factor * (in_flight + 1) / 4)
        strategy.on_start(picked)
        picked.active_requests += 1
    assert max(b.active_requests for b in pool) <= math.ceil(factor * 40 / 4)
    assert home.active_requests == max(b.active_requests for b in pool)
    # Load gone: the key is home again.
    for b in pool:
        while b.active_requests:
            b.active_requests -= 1
            strategy.on_done(b, 0.01, True)
    assert strategy.pick(pool, hot) is home


def test_consistent_hash_without_load_factor_keeps_a_hot_key_home() -> None:
    pool = backends(1, 1, 1)
    strategy = ConsistentHash()
    home = strategy.pick(pool, request("hot"))
    assert home is not None
    home.active_requests = 1000
    assert strategy.pick(pool, request("hot")) is home


# --- hash keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hash_key", "scope", "expected"),
    [
        ("client_ip", {}, "10.9.9.9"),
        ("path", {"raw_path": b"/a%2Fb", "path": "/a/b"}, "/a%2Fb"),
        ("header:x-user", {"headers": [(b"x-user", b"u1"), (b"x-user", b"u2")]}, "u1,u2"),
        ("header:x-user", {"headers": [(b"x-other", b"u1")]}, "10.9.9.9"),
        ("cookie:sid", {"headers": [(b"cookie", b'a=1; sid=s-42; b="x"')]}, "s-42"),
        ("cookie:sid", {"headers": [(b"cookie", b'bad;;=; sid="q"; {json}=1')]}, "q"),
        ("cookie:sid", {"headers": [(b"cookie", b"other=1")]}, "10.9.9.9"),
        ("cookie:sid", {"headers": [(b"cookie", b"sid=")]}, "10.9.9.9"),
        ("query:user", {"query_string": b"a=1&user=bob%20b"}, "bob b"),
        ("query:user", {"query_string": b"user="}, "10.9.9.9"),
        ("query:user", {"query_string": b""}, "10.9.9.9"),
    ],
)
def test_hash_key_values_and_client_ip_fallback(
    hash_key: str, scope: dict[str, Any], expected: str
) -> None:
    assert request("10.9.9.9", hash_key, **scope).key == expected


def test_hashing_strategies_use_the_hash_key() -> None:
    pool = backends(1, 1, 1, 1, 1)
    for strategy in (IpHash(), ConsistentHash()):
        users = {
            strategy.pick(
                pool, request(f"10.0.0.{i}", "header:x-user", headers=[(b"x-user", b"alice")])
            )
            for i in range(50)
        }
        assert len(users) == 1  # one user, fifty client addresses: one backend


# --- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "problem"),
    [
        ("round_robin", {"x": 1}, ("strategy_options.x", "unknown option; round_robin takes none")),
        (
            "consistent_hash",
            {"vnode": 10},
            (
                "strategy_options.vnode",
                "unknown option (did you mean 'vnodes'?); consistent_hash takes vnodes, "
                "load_factor",
            ),
        ),
        (
            "consistent_hash",
            {"load_factor": 1},
            ("strategy_options", "load_factor must be a number greater than 1, got 1"),
        ),
        (
            "consistent_hash",
            {"vnodes": 0},
            ("strategy_options", "vnodes must be at least 1 and at most 10000, got 0"),
        ),
        ("random", {"seed": "x"}, ("strategy_options", "seed must be a whole number, got 'x'")),
        ("least_latency", {"decay": 0}, ("strategy_options", "decay must be above zero, got 0")),
        (
            "least_latency",
            {"choices": 1},
            ("strategy_options", "choices must be at least 2, got 1"),
        ),
        (
            "example_strategy:Canary",
            {"percent": 101},
            ("strategy_options", "percent must be a number from 0 to 100, got 101"),
        ),
        (
            "collections:OrderedDict",
            {},
            ("strategy", "'collections:OrderedDict' has no pick() method"),
        ),
    ],
)
def test_option_problems(name: str, options: dict[str, object], problem: tuple[str, str]) -> None:
    assert check_options(name, options) == problem


def test_good_options_pass() -> None:
    assert check_options("least_latency", {"decay": "500ms", "choices": 3, "seed": 1}) is None
    assert check_options("consistent_hash", {"vnodes": 40, "load_factor": 1.25}) is None
    assert check_options("example_strategy:Canary", {"percent": 10, "seed": 1}) is None


# --- through the pool ------------------------------------------------------------------------


def pool_of(strategy: str, *weights: int, **options: object) -> Pool:
    config = PoolConfig(
        name="web",
        backends=tuple(
            BackendConfig(f"http://10.0.0.{i + 1}:80", chr(97 + i), w)
            for i, w in enumerate(weights)
        ),
        strategy=strategy,
        strategy_options=options,
        panic_threshold=None,  # these tests are about picking among usable backends only
    )
    return Pool(config)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_only_usable_backends_are_ever_picked(name: str) -> None:
    pool = pool_of(name, 1, 0, 1, 1, 1)  # b: weight 0
    pool.backends["c"].set_admin_state("draining")
    pool.backends["d"].set_healthy(False)
    seen = {pool.pick(request(f"10.0.{i}.1")) for i in range(200)}
    assert seen == {pool.backends["a"], pool.backends["e"]}
    pool.backends["a"].set_admin_state("disabled")
    pool.backends["e"].set_ejected_until(1e12)
    assert pool.pick(REQ) is None


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_a_retry_excludes_backends_already_tried(name: str) -> None:
    pool = pool_of(name, 1, 2, 1)
    first = pool.pick(REQ)
    assert first is not None
    second = pool.pick(REQ, (first,))
    assert second is not None and second is not first
    third = pool.pick(REQ, (first, second))
    assert third is not None and third not in (first, second)
    assert pool.pick(REQ, (first, second, third)) is None


def test_pool_hooks_reach_the_strategy() -> None:
    pool = pool_of("consistent_hash", 1, 1, load_factor=2)
    backend = pool.backends["a"]
    pool.start(backend)
    assert backend.active_requests == 1 and pool.strategy._outstanding == 1  # type: ignore[attr-defined]
    pool.done(backend, 0.01, True)
    assert backend.active_requests == 0 and pool.strategy._outstanding == 0  # type: ignore[attr-defined]


# --- the documented plug-in ------------------------------------------------------------------


def test_plugin_from_a_module_path_follows_the_protocol() -> None:
    pool = pool_of("example_strategy:Canary", 1, 1, 1, percent=0)
    assert isinstance(pool.strategy, Strategy)
    canary = Backend(BackendConfig("http://10.0.0.9:80", "canary-1", 1))
    pool.add(canary)
    assert canary not in {pool.pick(REQ) for _ in range(50)}  # 0%: stable backends only
    split = create_strategy("example_strategy:Canary", {"percent": 20, "seed": 4})
    everyone = pool.usable()
    counts = Counter(b.id for b in (split.pick(everyone, REQ) for _ in range(5000)) if b)
    assert abs(counts["canary-1"] / 5000 - 0.2) < 0.03
    assert {"a", "b", "c"} <= set(counts)


def test_the_docs_show_the_plugin_the_tests_use() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = (root / "tests" / "example_strategy.py").read_text()
    doc = (root / "docs" / "strategies.md").read_text()
    assert f"```python\n{code}```" in doc


def test_least_latency_judges_by_response_head_not_stream_length() -> None:
    clock = FakeClock()
    pool = pool_of("least_latency", 1, 1, clock=clock)
    a = pool.backends["a"]
    pool.start(a)
    pool.done(a, 30.0, True, response_time=0.01)  # a 30 s download whose head took 10 ms
    assert pool.strategy.score(a, clock.now) == pytest.approx(0.01)  # type: ignore[attr-defined]
    assert a.latency.percentiles(0.5) == [30.0]  # the status latency is the whole request


def test_least_connections_with_many_distinct_weights() -> None:
    pool = backends(*range(1, 60))  # lcm far beyond 2**30: float ratios
    for backend in pool:
        backend.active_requests = backend.weight  # all at ratio 1 ...
    pool[10].active_requests = 0  # ... but one
    assert LeastConnections().pick(pool, REQ) is pool[10]
