"""The health of one pool's backends: where passive ejections, active-check transitions and slow
start meet, with the timers behind them and the one log line per transition.

A `PoolHealth` belongs to its `Pool`; the pool's `HealthChecker` service starts and stops it with
the app, which cancels its timers. State changes are synchronous (no `await`), so no locks.

With several workers, what one worker sees is shared (`health.shared`): `share` publishes this
worker's transitions and ejections, `adopt` applies those of the others, quietly (the worker that
saw a change logged it: one line per instance).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from lb.backend import Backend
from lb.config import PoolConfig
from lb.health.outlier import OutlierDetector, max_ejected
from lb.health.slowstart import SlowStart
from lb.metrics import Metrics

logger = logging.getLogger("lb.health")

# Publishes one field of a backend ("healthy", "ejected_until") and its value to the other workers.
Share = Callable[[Backend, str, object], None]


class Members(Protocol):
    """What health reads of a pool (`lb.pool.Pool`): its name and config, its backends, and
    whether it still owns one (a reload may have handed it to a newer pool)."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> PoolConfig: ...

    @property
    def backends(self) -> Mapping[str, Backend]: ...

    def owns(self, backend: Backend) -> bool: ...


class PoolHealth:
    def __init__(
        self, pool: Members, metrics: Metrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        config = pool.config
        self.pool = pool
        self.metrics = metrics
        self._clock = clock
        passive = config.passive_health
        self.outlier = OutlierDetector(passive, clock) if passive is not None else None
        self.slow_start = SlowStart(config.slow_start, clock)
        self._returns: dict[str, asyncio.TimerHandle] = {}
        self._adopted: set[str] = set()  # ejections another worker made: their end is not logged
        self._share: Share | None = None
        self._stopped = False

    def __repr__(self) -> str:
        ejected = sum(1 for b in self.pool.backends.values() if b.ejected)
        ramping = len(self.slow_start)
        return f"<PoolHealth {self.pool.name} [{ejected} ejected, {ramping} ramping]>"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, share: Share | None = None) -> None:
        """Start the timers; with `share`, this worker's changes are published to the others."""
        self._stopped = False
        self._share = share
        # Backends carried over from the previous generation keep their ejection: take over the
        # timers that bring them back (the old generation cancelled its own when it stopped).
        now = self._clock()
        for backend in self.pool.backends.values():
            if backend.ejected and backend.id not in self._returns:
                self._schedule_return(backend, max(0.0, backend.ejected_until - now))
            self.slow_start.resume(backend)

    def stop(self) -> None:
        """Cancel every timer; nothing is ejected after this (requests still finishing on this
        generation must not eject a backend that a newer generation now owns)."""
        self._stopped = True
        self._share = None
        returns, self._returns = self._returns, {}
        for handle in returns.values():
            handle.cancel()
        # A backend a newer pool took over keeps ramping there.
        owns = self.pool.owns
        self.slow_start.stop(lambda backend: backend.owner is not None and not owns(backend))

    # -- passive health ------------------------------------------------------------------------

    def record(self, backend: Backend, ok: bool) -> None:
        """A request to `backend` finished; called by `Pool.done` when passive health is on."""
        outlier = self.outlier
        if outlier is None:
            return
        if ok:
            if backend.consecutive_failures:
                backend.consecutive_failures = 0
            return
        if self._stopped or not self.pool.owns(backend):
            return
        duration = outlier.failure(backend, self.pool.backends.values())
        if duration is None:
            return
        self._schedule_return(backend, duration)
        self._adopted.discard(backend.id)
        if self._share is not None:
            self._share(backend, "ejected_until", backend.ejected_until)
        logger.warning(
            "backend %s in pool %s ejected for %gs: %d failed requests in a row "
            "(ejection %d in a row)",
            backend.id,
            self.pool.name,
            duration,
            outlier.max_failures,
            outlier.in_a_row(backend),
        )
        self.metrics.ejection(self.pool.name, backend.id)

    def _schedule_return(self, backend: Backend, delay: float) -> None:
        old = self._returns.pop(backend.id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._returns[backend.id] = loop.call_later(delay, self._return, backend)

    def _return(self, backend: Backend) -> None:
        self._returns.pop(backend.id, None)
        if not backend.ejected:
            return
        self.slow_start.begin(backend)
        if self.outlier is not None:
            self.outlier.returned(backend)
        else:
            backend.set_ejected_until(0.0)
        if backend.id in self._adopted:
            self._adopted.discard(backend.id)
            return  # the worker that ejected it says so
        logger.info("backend %s in pool %s is back from ejection", backend.id, self.pool.name)

    # -- active checks -------------------------------------------------------------------------

    def checked(self, backend: Backend, healthy: bool, detail: str, down_for: float = 0.0) -> None:
        """Active checks flipped `backend`; `detail` says what the last check saw."""
        config = self.pool.config.health_check
        if healthy == backend.healthy:
            return
        if self._share is not None:
            self._share(backend, "healthy", healthy)
        if healthy:
            self.slow_start.begin(backend)
            backend.set_healthy(True)
            logger.info(
                "backend %s in pool %s is healthy: %d good checks in a row (unhealthy for %.1fs)",
                backend.id,
                self.pool.name,
                config.healthy_threshold if config else 1,
                down_for,
            )
        else:
            backend.set_healthy(False)
            logger.warning(
                "backend %s in pool %s is unhealthy: %d failed checks in a row, last: %s",
                backend.id,
                self.pool.name,
                config.unhealthy_threshold if config else 1,
                detail,
            )

    def adopt(self, backend: Backend, healthy: bool | None, ejected_until: float) -> None:
        """What another worker of the instance saw (`health.shared`): the leader's verdict of
        active checks (`healthy`, None when this worker runs the checks itself) and an ejection
        until `ejected_until` (monotonic). Applied without a log line."""
        checked = self.pool.config.health_check is not None
        if checked and healthy is not None and healthy != backend.healthy:
            if healthy:
                self.slow_start.begin(backend)
            backend.set_healthy(healthy)
            state = "healthy" if healthy else "unhealthy"
            logger.debug(
                "backend %s in pool %s is %s by the leader's checks",
                backend.id,
                self.pool.name,
                state,
            )
        outlier = self.outlier
        if outlier is None or self._stopped:
            return
        now = self._clock()
        if ejected_until <= max(now, backend.ejected_until):
            return  # over already, or this worker knows of a longer one
        backends = self.pool.backends.values()
        ejected = sum(1 for b in backends if b.ejected)
        if not backend.ejected and ejected + 1 > max_ejected(len(backends), outlier.max_percent):
            return  # two workers ejected two backends at once: the cap still holds here
        backend.consecutive_failures = 0
        backend.set_ejected_until(ejected_until)
        self._adopted.add(backend.id)
        self._schedule_return(backend, ejected_until - now)
        logger.debug("backend %s in pool %s ejected by another worker", backend.id, self.pool.name)

    # -- answers -------------------------------------------------------------------------------

    def retry_after(self) -> int:
        """Whole seconds a client should wait when no backend is usable: until the first
        ejection ends or the next health check may bring one back; at least 1."""
        now = self._clock()
        wait = math.inf
        for backend in self.pool.backends.values():
            if backend.ejected:
                wait = min(wait, backend.ejected_until - now)
        check = self.pool.config.health_check
        if check is not None:
            wait = min(wait, check.interval)
        return 1 if math.isinf(wait) else max(1, math.ceil(wait))
