"""Passive health (Envoy: outlier detection): eject backends whose requests fail in a row.

Decisions only, no timers and no I/O: `PoolHealth` calls `failure()` from the request path,
schedules the return when it gets an ejection time back, and calls `returned()` when it is up.

Rules (SPEC 5):

- `max_failures` failed requests in a row (connect error, timeout, 5xx) eject a backend;
- for `ejection_time` × the number of ejections in a row, capped at `MAX_MULTIPLIER`; a backend that
  has served `ejection_time` since it came back without being ejected again starts a new row;
- never more than `max_ejection_percent` of the pool's backends at once, rounded down: with 3
  backends, 50% lets one be ejected, 33% none.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection

from lb.backend import Backend
from lb.config import PassiveHealthConfig

MAX_MULTIPLIER = 10


def ejection_duration(ejection_time: float, in_a_row: int) -> float:
    """How long the `in_a_row`-th ejection in a row lasts."""
    return ejection_time * min(max(in_a_row, 1), MAX_MULTIPLIER)


def max_ejected(pool_size: int, percent: float) -> int:
    """How many of `pool_size` backends may be ejected at once: `percent` of them, rounded down.

    Rounding down keeps the promise "never more than max_ejection_percent" literal; the small
    epsilon keeps 3 × 33.3333% from flooring to 0 through float error.
    """
    return math.floor(pool_size * percent / 100.0 + 1e-9)


class OutlierDetector:
    """Consecutive-failure ejection for one pool."""

    __slots__ = ("max_failures", "ejection_time", "max_percent", "_clock", "_rows", "_returned")

    def __init__(
        self, config: PassiveHealthConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = config.max_failures
        self.ejection_time = config.ejection_time
        self.max_percent = config.max_ejection_percent
        self._clock = clock
        self._rows: dict[str, int] = {}  # backend id -> ejections in a row
        self._returned: dict[str, float] = {}  # backend id -> when its last ejection ended

    def __repr__(self) -> str:
        return (
            f"<OutlierDetector {self.max_failures} failures -> {self.ejection_time:g}s, "
            f"max {self.max_percent:g}%>"
        )

    def in_a_row(self, backend: Backend) -> int:
        return self._rows.get(backend.id, 0)

    def failure(self, backend: Backend, pool: Collection[Backend]) -> float | None:
        """Count one failed request to `backend`; the ejection time if this ejects it, else None."""
        failures = backend.consecutive_failures + 1
        backend.consecutive_failures = failures
        if failures < self.max_failures or backend.ejected:
            return None
        ejected = sum(1 for b in pool if b.ejected)
        if ejected + 1 > max_ejected(len(pool), self.max_percent):
            # At the cap: keep counting, so the backend goes as soon as another one comes back.
            return None
        now = self._clock()
        row = self._rows.get(backend.id, 0)
        returned = self._returned.get(backend.id)
        if returned is not None and now - returned >= self.ejection_time:
            row = 0
        row += 1
        self._rows[backend.id] = row
        duration = ejection_duration(self.ejection_time, row)
        backend.consecutive_failures = 0
        backend.set_ejected_until(now + duration)
        return duration

    def returned(self, backend: Backend) -> None:
        """The ejection of `backend` is over: it may receive requests again."""
        backend.consecutive_failures = 0
        self._returned[backend.id] = self._clock()
        backend.set_ejected_until(0.0)
