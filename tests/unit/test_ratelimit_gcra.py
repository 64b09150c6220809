"""The GCRA arithmetic with an explicit clock: burst, refill, fractional rates, header values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb.ratelimit.gcra import Decision, Limit, decide, decision, rate_limit_headers


class Bucket:
    """One key's stored TAT, driven by `decide` at given instants."""

    def __init__(self, rate: float, burst: int) -> None:
        self.limit = Limit(rate, burst)
        self.tat: float | None = None

    def hit(self, now: float) -> Decision:
        new_tat, result = decide(self.limit, self.tat, now)
        if new_tat is not None:
            self.tat = new_tat
        return result


def test_a_fresh_key_has_the_whole_burst_at_once() -> None:
    bucket = Bucket(rate=1, burst=5)
    results = [bucket.hit(100.0) for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert [r.remaining for r in results] == [4, 3, 2, 1, 0, 0]
    assert [r.reset for r in results] == [1, 2, 3, 4, 5, 5]
    assert results[-1].retry_after == 1
    assert all(r.retry_after == 0 for r in results[:5])


def test_refill_gives_one_request_per_interval() -> None:
    bucket = Bucket(rate=2, burst=2)  # one every 0.5 s
    assert bucket.hit(0.0).allowed and bucket.hit(0.0).allowed
    assert not bucket.hit(0.49).allowed
    assert bucket.hit(0.5).allowed
    assert not bucket.hit(0.5).allowed
    assert not bucket.hit(0.99).allowed
    assert bucket.hit(1.0).allowed


def test_a_rejected_request_costs_nothing() -> None:
    bucket = Bucket(rate=1, burst=1)
    assert bucket.hit(0.0).allowed
    for t in (0.1, 0.2, 0.5, 0.9):
        assert not bucket.hit(t).allowed
    assert bucket.hit(1.0).allowed


def test_a_long_idle_key_is_full_again_never_fuller() -> None:
    bucket = Bucket(rate=10, burst=3)
    assert bucket.hit(0.0).remaining == 2
    results = [bucket.hit(3600.0) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert results[0].remaining == 2


def test_remaining_after_a_partial_refill() -> None:
    bucket = Bucket(rate=1, burst=5)
    for _ in range(5):
        bucket.hit(0.0)
    result = bucket.hit(2.5)  # 2.5 tokens back, one spent: 1.5 left, 1 whole
    assert result.allowed
    assert result.remaining == 1
    assert result.reset == 4  # TAT 6 - 2.5 = 3.5 s until full, rounded up


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(0.5, 1), (0.1, 3), (2.5, 4), (3, 3), (7, 7), (10, 20), (1 / 3, 2), (1000, 50), (0.001, 2)],
)
def test_fractional_rates_allow_exactly_the_burst_at_one_instant(rate: float, burst: int) -> None:
    bucket = Bucket(rate, burst)
    now = 1_000_000.123456  # far from zero, like a real monotonic clock
    allowed = sum(bucket.hit(now).allowed for _ in range(burst + 3))
    assert allowed == burst


def test_a_fractional_rate_refills_on_its_interval() -> None:
    bucket = Bucket(rate=0.5, burst=1)  # one every 2 s
    assert bucket.hit(0.0).allowed
    rejected = bucket.hit(0.0)
    assert not rejected.allowed and rejected.retry_after == 2 and rejected.reset == 2
    assert bucket.hit(1.5).retry_after == 1  # 0.5 s left, rounded up
    assert not bucket.hit(1.999).allowed
    assert bucket.hit(2.0).allowed


@pytest.mark.parametrize(
    ("elapsed", "retry_after"),
    [(0.0, 3), (0.01, 3), (0.7, 3), (1.0, 2), (1.2, 2), (2.0, 1), (2.95, 1), (2.999999, 1)],
)
def test_retry_after_is_whole_seconds_rounded_up(elapsed: float, retry_after: int) -> None:
    bucket = Bucket(rate=1 / 3, burst=1)  # one every 3 s
    assert bucket.hit(0.0).allowed
    result = bucket.hit(elapsed)
    assert not result.allowed
    assert result.retry_after == retry_after
    assert result.remaining == 0


def test_reset_counts_whole_seconds_until_full() -> None:
    bucket = Bucket(rate=4, burst=10)
    assert bucket.hit(0.0).reset == 1  # 0.25 s until full, rounded up
    for _ in range(7):
        bucket.hit(0.0)
    assert bucket.hit(0.0).reset == 3  # nine used: 2.25 s
    assert bucket.hit(2.5).reset == 1  # full again by then; one spent: 0.25 s
    assert bucket.hit(100.0).reset == 1


def test_decision_from_a_remote_store_matches_the_local_rule() -> None:
    limit = Limit(10, 20)
    assert decision(limit, True, 0.1, 0.0) == Decision(True, 19, 1, 0)
    assert decision(limit, True, 2.0, 0.0) == Decision(True, 0, 2, 0)
    assert decision(limit, False, 2.0, 0.1) == Decision(False, 0, 2, 1)
    assert decision(limit, False, 1.95, 1.3) == Decision(False, 0, 2, 2)


def test_headers_carry_burst_remaining_and_reset() -> None:
    limit = Limit(10, 20)
    assert rate_limit_headers(limit, Decision(True, 19, 1, 0)) == [
        (b"ratelimit-limit", b"20"),
        (b"ratelimit-remaining", b"19"),
        (b"ratelimit-reset", b"1"),
    ]


def test_a_limit_needs_a_positive_rate_and_burst() -> None:
    with pytest.raises(ValueError):
        Limit(0, 1)
    with pytest.raises(ValueError):
        Limit(1, 0)
    assert repr(Limit(2.5, 4)) == "<Limit 2.5/s burst=4>"


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.01, max_value=5000, allow_nan=False),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200),
    start=st.floats(min_value=0, max_value=1e7),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float], start: float
) -> None:
    bucket = Bucket(rate, burst)
    now = start
    allowed = 0
    for gap in gaps:
        now += gap
        result = bucket.hit(now)
        allowed += result.allowed
        assert 0 <= result.remaining <= burst - 1
        assert result.allowed or result.retry_after >= 1
    elapsed = now - start
    assert allowed <= burst + math.floor(elapsed * rate * (1 + 1e-9) + 1e-3)
