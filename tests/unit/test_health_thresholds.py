"""Active-check thresholds, jitter and slow-start ramps as pure functions over a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from lb.backend import Backend
from lb.config import BackendConfig
from lb.health import CheckState, SlowStart, check_delay, ramp_factor


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(state: CheckState, results: str, clock: FakeClock, step: float = 1.0) -> list[bool | None]:
    """Feed results ("+" good, "-" failed), one per `step` seconds; the transitions seen."""
    out = []
    for r in results:
        clock.now += step
        out.append(state.observe(r == "+", clock.now))
    return out


def test_turns_unhealthy_after_exactly_unhealthy_threshold_failures_in_a_row() -> None:
    clock = FakeClock()
    state = CheckState(2, 3, now=clock())
    assert run(state, "--", clock) == [None, None]
    assert state.healthy
    assert run(state, "-", clock) == [False]
    assert not state.healthy and state.changed_at == clock.now
    assert run(state, "---", clock) == [None, None, None]  # no repeated transitions while down


def test_turns_healthy_after_exactly_healthy_threshold_successes_in_a_row() -> None:
    clock = FakeClock()
    state = CheckState(2, 3, healthy=False, now=clock())
    assert run(state, "+", clock) == [None]
    assert run(state, "+", clock) == [True]
    assert state.healthy
    assert run(state, "+++", clock) == [None, None, None]


def test_a_break_in_the_row_starts_counting_again() -> None:
    clock = FakeClock()
    state = CheckState(2, 3, now=clock())
    assert run(state, "--+--+--+", clock) == [None] * 9
    assert state.healthy
    state = CheckState(3, 1, healthy=False, now=clock())
    assert run(state, "++-++-++", clock) == [None] * 8
    assert not state.healthy
    assert run(state, "+", clock) == [True]


def test_thresholds_of_one_flip_on_every_change() -> None:
    clock = FakeClock()
    state = CheckState(1, 1, now=clock())
    assert run(state, "-+-+", clock) == [False, True, False, True]


def test_since_measures_time_in_the_current_state() -> None:
    clock = FakeClock(10.0)
    state = CheckState(1, 2, now=clock())
    run(state, "--", clock, step=5.0)  # down at t=20
    clock.now = 32.5
    assert state.since(clock.now) == 12.5
    assert "unhealthy" in repr(state)


@pytest.mark.parametrize("spread", [0.0, 0.25, 0.5, 0.999])
def test_check_delay_stays_within_the_jitter_band(spread: float) -> None:
    delay = check_delay(10.0, 0.1, spread)
    assert 9.0 <= delay <= 11.0
    assert check_delay(10.0, 0.0, spread) == 10.0
    assert check_delay(10.0, 1.0, spread) >= 0.0


def test_check_delay_spreads_around_the_interval() -> None:
    assert check_delay(10.0, 0.1, 0.0) == pytest.approx(9.0)
    assert check_delay(10.0, 0.1, 0.5) == pytest.approx(10.0)


def test_ramp_factor_goes_from_ten_percent_to_all_over_the_window() -> None:
    assert ramp_factor(0.0, 30.0) == pytest.approx(0.1)
    assert ramp_factor(15.0, 30.0) == pytest.approx(0.55)
    assert ramp_factor(30.0, 30.0) == 1.0
    assert ramp_factor(99.0, 30.0) == 1.0
    assert ramp_factor(5.0, 0.0) == 1.0
    factors = [ramp_factor(t, 10.0) for t in range(11)]
    assert factors == sorted(factors)


async def test_slow_start_ramps_the_weight_on_a_timer_and_ends_at_the_config_weight() -> None:
    backend = Backend(BackendConfig("http://127.0.0.1:1", "a", weight=4))
    changes: list[float] = []

    class Owner:
        def invalidate(self) -> None:
            changes.append(backend.weight)

    backend.owner = Owner()
    ramp = SlowStart(0.2)
    ramp.begin(backend)
    assert backend.weight == pytest.approx(0.4)
    assert ramp.ramping(backend)
    for _ in range(100):
        if not ramp.ramping(backend):
            break
        await asyncio.sleep(0.02)
    assert backend.weight == 4 and not ramp.ramping(backend)
    assert changes == sorted(changes) and 3 <= len(changes) <= 12  # a few steps, not per request


async def test_slow_start_stop_restores_full_weight_and_cancels_the_timer() -> None:
    backend = Backend(BackendConfig("http://127.0.0.1:1", "a", weight=2))
    ramp = SlowStart(60.0)
    ramp.begin(backend)
    assert backend.weight == pytest.approx(0.2)
    ramp.stop()
    assert backend.weight == 2 and len(ramp) == 0


def test_slow_start_off_leaves_the_weight_alone() -> None:
    backend = Backend(BackendConfig("http://127.0.0.1:1", "a", weight=3))
    SlowStart(0.0).begin(backend)  # no loop needed: nothing is scheduled
    assert backend.weight == 3
