"""Load-aware strategies: least connections, power of two choices, least latency (peak EWMA).

They read `Backend.active_requests`, which the pool keeps (requests sent and not yet finished),
and compare load per unit of weight, so a weight-3 backend is "as busy" as a weight-1 backend
when it has three times the requests in flight.
"""

from __future__ import annotations

import math
import random
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from operator import add

from lb.backend import Backend
from lb.strategy import options
from lb.strategy.base import PickRequest
from lb.strategy.weighted import WeightTable, table_for

# Score of a backend that has no latency sample yet but a request in flight (Finagle's penalty):
# it is probed with one request at a time until its first answer says how fast it is.
_PENALTY = 1e6


def draw_two(table: WeightTable, fraction: Callable[[], float]) -> tuple[int, int]:
    """Two distinct indices, each drawn in proportion to weight (the second among the others)."""
    count = len(table.weights)
    first = table.draw(fraction())
    if table.uniform:
        second = min(int(fraction() * (count - 1)), count - 2)
        return first, second + (second >= first)
    weight = table.weights[first]
    start = table.cumulative[first] - weight
    # Draw over the total without `first`'s span, then step over that span.
    point = fraction() * (table.total - weight)
    if point >= start:
        point += weight
    second = min(bisect_right(table.cumulative, point), count - 1)
    if second == first:  # only float rounding at a span's edge gets here
        second = (first + 1) % count
    return first, second


class LeastConnections:
    """The backend with the fewest requests in flight per unit of weight (nginx's least_conn).

    Ties are shared out by smooth weighted round robin, so an idle pool spreads by weight instead
    of always sending to the first backend.
    """

    def __init__(self) -> None:
        self._backends: Sequence[Backend] = ()
        self._weights: list[float] = []  # float: slow start ramps weights
        self._current: list[float] = []
        self._scale: list[float] = []  # ints unless the weights' lcm is huge
        self._total = 0.0
        self._uniform = True
        self._next = 0

    def __repr__(self) -> str:
        return "<LeastConnections>"

    def _rebuild(self, backends: Sequence[Backend]) -> None:
        previous = dict(zip(self._backends, self._current, strict=True))
        self._weights = [b.weight for b in backends]
        self._current = [previous.get(b, 0) for b in backends]
        self._total = sum(self._weights)
        self._uniform = len(set(self._weights)) <= 1
        integral = all(float(w).is_integer() for w in self._weights)
        common = math.lcm(*(int(w) for w in self._weights)) if backends and integral else 0
        if 0 < common <= 1 << 30:
            self._scale = [common // int(w) for w in self._weights]
        else:  # many distinct weights: floats, exact enough (only ties may be missed)
            self._scale = [1 / w for w in self._weights]
        self._backends = backends

    def pick(self, backends: Sequence[Backend], request: PickRequest) -> Backend | None:
        if backends is not self._backends:
            self._rebuild(backends)
        count = len(backends)
        if count < 2:
            return backends[0] if count else None
        # min, index and count run in C: a pick stays cheap in big pools.
        if self._uniform:
            active = [b.active_requests for b in backends]
            least = min(active)
            index = active.index(least)
            if index < self._next < count and active.count(least) > 1:
                # Ties go round-robin: the first one after the last pick, if any.
                try:
                    index = active.index(least, self._next)
                except ValueError:
                    pass
            self._next = index + 1
            return backends[index]
        # active/weight as exact integers: active × (lcm of weights / weight). Small ints are
        # cached by CPython, so this allocates little, and equal ratios compare equal.
        loads = [b.active_requests * scale for b, scale in zip(backends, self._scale, strict=True)]
        lowest = min(loads)
        tied = loads.count(lowest)
        if tied == 1:
            return backends[loads.index(lowest)]
        # Smooth WRR among the tied: only they gain their weight, as in nginx.
        weights = self._weights
        if tied == count:  # e.g. an idle pool: everyone gains, done in C
            current = self._current = list(map(add, self._current, weights))
            best_value = max(current)
            best = current.index(best_value)
            current[best] = best_value - self._total
            return backends[best]
        current = self._current
        best = -1
        best_value = total = 0.0
        index = -1
        for _ in range(tied):
            index = loads.index(lowest, index + 1)
            weight = weights[index]
            value = current[index] = current[index] + weight
            total += weight
            if best < 0 or value > best_value:
                best, best_value = index, value
        current[best] = best_value - total
        return backends[best]


class PowerOfTwoChoices:
    """Two distinct backends drawn at random by weight; the one with less in flight per unit of
    weight wins, the first drawn on a tie. Near least-connections quality at O(1) per pick, and
    without every balancer instance herding onto the same least loaded backend."""

    def __init__(self, seed: object = None) -> None:
        self._random = random.Random(options.seed(seed)).random
        self._table: WeightTable | None = None

    def __repr__(self) -> str:
        return "<PowerOfTwoChoices>"

    def pick(self, backends: Sequence[Backend], request: PickRequest) -> Backend | None:
        if len(backends) < 2:
            return backends[0] if backends else None
        table = self._table = table_for(self._table, backends)
        first, second = draw_two(table, self._random)
        a, b = backends[first], backends[second]
        if b.active_requests * a.weight < a.active_requests * b.weight:
            return b
        return a


class PeakEwma:
    """A backend's latency estimate: jumps to any slower answer at once, decays towards faster
    ones and towards zero while idle, so a backend that was slow gets probed again later."""

    __slots__ = ("cost", "stamp")

    def __init__(self, now: float) -> None:
        self.cost = 0.0  # seconds; 0.0: no answer seen yet
        self.stamp = now

    def __repr__(self) -> str:
        return f"<PeakEwma {self.cost * 1000:.2f}ms>"


class LeastLatency:
    """Finagle/Linkerd's peak EWMA: score = latency estimate × (requests in flight + 1) / weight,
    lowest wins.

    Options: `decay` (default 10s), how fast the estimate forgets; `choices` (default 2), how many
    backends drawn by weight are compared per pick, every backend when it is at least the pool
    size; `seed`. `clock` (a monotonic seconds function) is for tests.

    The estimate lives in `Backend.strategy_data`, so it survives a config reload with the backend.
    A failed request never lowers it: a backend that fails fast must not look fast.
    """

    def __init__(
        self,
        decay: object = "10s",
        choices: object = 2,
        seed: object = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._decay = options.duration("decay", decay)
        self._choices = options.integer("choices", choices, 2)
        self._rng = random.Random(options.seed(seed))
        self._random = self._rng.random
        if clock is not None and not callable(clock):
            raise ValueError("clock must be a function returning seconds")
        self._clock = clock or time.monotonic
        self._table: WeightTable | None = None

    def __repr__(self) -> str:
        return f"<LeastLatency decay={self._decay:g}s choices={self._choices}>"

    def _state(self, backend: Backend) -> PeakEwma:
        state = backend.strategy_data
        if type(state) is not PeakEwma:
            state = backend.strategy_data = PeakEwma(self._clock())
        return state

    def score(self, backend: Backend, now: float) -> float:
        state = backend.strategy_data
        if type(state) is not PeakEwma:
            state = self._state(backend)
        active = backend.active_requests
        cost = state.cost
        if cost == 0.0:
            return (_PENALTY + active) / backend.weight if active else 0.0
        decayed = cost * math.exp((state.stamp - now) / self._decay)
        return decayed * (active + 1) / backend.weight

    def pick(self, backends: Sequence[Backend], request: PickRequest) -> Backend | None:
        count = len(backends)
        if count < 2:
            return backends[0] if count else None
        now = self._clock()
        score = self.score
        if self._choices == 2 and count > 2:
            table = self._table = table_for(self._table, backends)
            first, second = draw_two(table, self._random)
            a, b = backends[first], backends[second]
            return b if score(b, now) < score(a, now) else a
        if self._choices >= count:
            # Every backend, from a random one on, so that ties (idle, no sample yet) spread.
            start = int(self._random() * count) % count
            indices: Sequence[int] = [*range(start, count), *range(start)]
        else:
            indices = self._rng.sample(range(count), self._choices)
        best = indices[0]
        best_score = score(backends[best], now)
        for index in indices[1:]:
            value = score(backends[index], now)
            if value < best_score:
                best, best_score = index, value
        return backends[best]

    def on_done(self, backend: Backend, seconds: float, ok: bool) -> None:
        state = self._state(backend)
        now = self._clock()
        cost = state.cost
        if not ok and seconds < cost:
            seconds = cost
        keep = math.exp((state.stamp - now) / self._decay)
        decayed = cost * keep
        state.cost = seconds if seconds > decayed else decayed + seconds * (1.0 - keep)
        state.stamp = now
