"""The retry budget over a fake clock."""

from __future__ import annotations

from lb.proxy.retry import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_at_least_three_retries_per_second() -> None:
    clock = Clock()
    budget = RetryBudget(0, clock)
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]
    clock.now += 1
    assert budget.try_acquire()


def test_percent_of_requests_over_ten_seconds() -> None:
    clock = Clock()
    budget = RetryBudget(20, clock)
    for _ in range(100):
        budget.record_request()
    granted = sum(budget.try_acquire() for _ in range(50))
    assert granted == 20
    clock.now += 11  # the window has passed: only the per-second floor is left
    assert sum(budget.try_acquire() for _ in range(50)) == 3
