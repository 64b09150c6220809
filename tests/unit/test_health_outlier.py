"""Passive health: consecutive-failure ejection, its growth and cap, and max_ejection_percent."""

from __future__ import annotations

import pytest

from lb.backend import Backend
from lb.config import BackendConfig, PassiveHealthConfig
from lb.health import OutlierDetector, ejection_duration, max_ejected


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def backends(n: int) -> list[Backend]:
    return [Backend(BackendConfig(f"http://127.0.0.1:{9000 + i}", f"b{i}")) for i in range(n)]


def fail(
    detector: OutlierDetector, backend: Backend, pool: list[Backend], times: int
) -> list[float]:
    out = []
    for _ in range(times):
        duration = detector.failure(backend, pool)
        if duration is not None:
            out.append(duration)
    return out


def test_max_failures_in_a_row_eject_and_a_success_resets_the_count() -> None:
    clock = FakeClock()
    pool = backends(2)
    detector = OutlierDetector(PassiveHealthConfig(3, 30.0, 50.0), clock)
    assert fail(detector, pool[0], pool, 2) == []
    pool[0].consecutive_failures = 0  # a success (PoolHealth.record)
    assert fail(detector, pool[0], pool, 2) == []
    assert not pool[0].ejected
    assert fail(detector, pool[0], pool, 1) == [30.0]
    assert pool[0].ejected and pool[0].ejected_until == clock.now + 30.0
    assert pool[0].state == "unhealthy" and not pool[0].usable


def test_failures_while_ejected_do_not_extend_the_ejection() -> None:
    clock = FakeClock()
    pool = backends(2)
    detector = OutlierDetector(PassiveHealthConfig(1, 10.0, 50.0), clock)
    assert fail(detector, pool[0], pool, 5) == [10.0]
    assert pool[0].ejected_until == clock.now + 10.0


def test_ejections_in_a_row_grow_and_are_capped_at_ten_times() -> None:
    clock = FakeClock()
    pool = backends(2)
    detector = OutlierDetector(PassiveHealthConfig(1, 2.0, 50.0), clock)
    durations = []
    for _ in range(12):
        durations += fail(detector, pool[0], pool, 1)
        clock.now += durations[-1]
        detector.returned(pool[0])
        clock.now += 0.5  # fails again soon after coming back: the same row
    assert durations == [2.0 * n for n in range(1, 11)] + [20.0, 20.0]
    assert detector.in_a_row(pool[0]) == 12


def test_a_backend_that_served_for_an_ejection_time_starts_a_new_row() -> None:
    clock = FakeClock()
    pool = backends(2)
    detector = OutlierDetector(PassiveHealthConfig(1, 2.0, 50.0), clock)
    assert fail(detector, pool[0], pool, 1) == [2.0]
    detector.returned(pool[0])
    clock.now += 1.0
    assert fail(detector, pool[0], pool, 1) == [4.0]
    detector.returned(pool[0])
    clock.now += 2.0
    assert fail(detector, pool[0], pool, 1) == [2.0]


def test_returned_makes_the_backend_usable_with_a_fresh_count() -> None:
    clock = FakeClock()
    pool = backends(2)
    detector = OutlierDetector(PassiveHealthConfig(2, 5.0, 50.0), clock)
    fail(detector, pool[0], pool, 2)
    pool[0].consecutive_failures = 7  # late failures of requests started before the ejection
    detector.returned(pool[0])
    assert pool[0].usable and pool[0].consecutive_failures == 0
    assert fail(detector, pool[0], pool, 1) == []


@pytest.mark.parametrize(
    ("size", "percent", "expected"),
    [(1, 50, 0), (1, 100, 1), (2, 50, 1), (3, 50, 1), (3, 100 / 3, 1), (3, 33, 0), (4, 50, 2),
     (5, 10, 0), (10, 10, 1), (10, 0, 0), (7, 100, 7)],
)  # fmt: skip
def test_max_ejected_rounds_down(size: int, percent: float, expected: int) -> None:
    assert max_ejected(size, percent) == expected


def test_never_more_than_max_ejection_percent_and_the_next_goes_when_one_returns() -> None:
    clock = FakeClock()
    pool = backends(4)
    detector = OutlierDetector(PassiveHealthConfig(2, 5.0, 50.0), clock)
    for backend in pool:
        fail(detector, backend, pool, 3)
    assert [b.ejected for b in pool] == [True, True, False, False]
    detector.returned(pool[0])
    # b2 kept counting at the cap: its next failure ejects it.
    assert fail(detector, pool[2], pool, 1) == [5.0]
    assert sum(b.ejected for b in pool) == 2


def test_zero_percent_never_ejects() -> None:
    pool = backends(3)
    detector = OutlierDetector(PassiveHealthConfig(1, 5.0, 0.0), FakeClock())
    assert fail(detector, pool[0], pool, 10) == []


def test_ejection_duration() -> None:
    assert ejection_duration(30.0, 1) == 30.0
    assert ejection_duration(30.0, 3) == 90.0
    assert ejection_duration(30.0, 50) == 300.0
    assert ejection_duration(30.0, 0) == 30.0
