"""Retry policy: which failures may be retried, and the budget that stops retry storms.

The budget follows Envoy/Finagle: retries may add at most `budget_percent` to the pool's requests
over the last 10 seconds, with a floor of 3 retries per second so a quiet pool can still retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

_WINDOW = 10  # seconds, one bucket each
_MIN_PER_SECOND = 3


class RetryBudget:
    __slots__ = ("percent", "_clock", "_requests", "_retries", "_second")

    def __init__(self, percent: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.percent = percent
        self._clock = clock
        self._requests = [0] * _WINDOW
        self._retries = [0] * _WINDOW
        self._second = int(clock())

    def __repr__(self) -> str:
        return f"<RetryBudget {self.percent}% [{sum(self._retries)}/{sum(self._requests)} in 10s]>"

    def _advance(self) -> int:
        now = int(self._clock())
        if now != self._second:
            # Zero the buckets of the seconds that passed without traffic.
            for second in range(self._second + 1, min(now, self._second + _WINDOW) + 1):
                self._requests[second % _WINDOW] = 0
                self._retries[second % _WINDOW] = 0
            self._second = now
        return now % _WINDOW

    def record_request(self) -> None:
        self._requests[self._advance()] += 1

    def try_acquire(self) -> bool:
        """Take one retry from the budget if there is room; False means: do not retry."""
        bucket = self._advance()
        allowed = sum(self._requests) * self.percent / 100.0
        if self._retries[bucket] < _MIN_PER_SECOND or sum(self._retries) < allowed:
            self._retries[bucket] += 1
            return True
        return False
