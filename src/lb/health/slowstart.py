"""Slow start: a backend that comes back ramps its weight up instead of taking its full share.

The effective weight (`Backend.weight`, what strategies read) goes linearly from `MIN_FACTOR` of the
backend's `config_weight` to all of it over the window, updated by a timer `STEPS` times per window,
never per request. Only strategies that honour weights feel it (round_robin ignores weights).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from lb.backend import Backend

MIN_FACTOR = 0.1
STEPS = 10


def ramp_factor(elapsed: float, window: float) -> float:
    """The share of its weight a backend gets `elapsed` seconds into a ramp of `window` seconds."""
    if window <= 0.0 or elapsed >= window:
        return 1.0
    return MIN_FACTOR + (1.0 - MIN_FACTOR) * max(elapsed, 0.0) / window


class SlowStart:
    """The weight ramps of one pool's backends, each driven by its own `call_later` timer."""

    __slots__ = ("window", "_clock", "_ramps")

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._ramps: dict[str, tuple[Backend, asyncio.TimerHandle]] = {}

    def __repr__(self) -> str:
        return f"<SlowStart {self.window:g}s [{len(self._ramps)} ramping]>"

    def __len__(self) -> int:
        return len(self._ramps)

    def ramping(self, backend: Backend) -> bool:
        return backend.id in self._ramps

    def begin(self, backend: Backend) -> None:
        """Start (or restart) the ramp of `backend`; call it before the backend becomes usable."""
        if self.window <= 0.0:
            return
        self._cancel(backend.id)
        backend.ramp_started = self._clock()
        self._step(backend)

    def resume(self, backend: Backend) -> None:
        """Carry on the ramp `backend` is in (one a previous generation's pool began)."""
        if backend.ramp_started and backend.id not in self._ramps:
            self._step(backend)

    def _step(self, backend: Backend) -> None:
        started = backend.ramp_started
        factor = ramp_factor(self._clock() - started, self.window) if started else 1.0
        if factor >= 1.0:
            self._ramps.pop(backend.id, None)
            backend.ramp_started = 0.0
            backend.set_weight(backend.config_weight)
            return
        # Re-read config_weight on every step: an operator may change it during the ramp.
        backend.set_weight(round(backend.config_weight * factor, 3))
        handle = asyncio.get_running_loop().call_later(self.window / STEPS, self._step, backend)
        self._ramps[backend.id] = (backend, handle)

    def _cancel(self, backend_id: str) -> None:
        ramp = self._ramps.pop(backend_id, None)
        if ramp is not None:
            ramp[1].cancel()

    def stop(self, handed_over: Callable[[Backend], bool] = lambda backend: False) -> None:
        """Cancel every ramp and give the backends their full weight (nothing is left half-way),
        except those `handed_over` to a newer pool, which carries their ramp on."""
        ramps, self._ramps = self._ramps, {}
        for backend, handle in ramps.values():
            handle.cancel()
            if not handed_over(backend):
                backend.ramp_started = 0.0
                backend.set_weight(backend.config_weight)
