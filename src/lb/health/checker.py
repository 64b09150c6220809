"""Active health checks: the service that probes one pool's backends and feeds `CheckState`.

One task per backend, so a backend that hangs never delays the checks of the others; each task
bounds a check by its `timeout` and waits `interval` ± jitter after it ended before the next one,
so checks of one backend never overlap, even when `timeout` exceeds `interval` (SPEC 5).
The tasks are kept referenced and cancelled on `stop()`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Protocol

import httpx

from lb.backend import Backend
from lb.config import HealthCheckConfig
from lb.health.monitor import Members, PoolHealth
from lb.health.thresholds import CheckState, check_delay
from lb.transport import UNLIMITED

SUCCESS, FAILURE, TIMEOUT, ERROR = "success", "failure", "timeout", "error"
_BODY_LIMIT = 64 * 1024  # read this much of a check's answer so the connection can be reused
_USER_AGENT = b"lb-health-check"


class Checked(Members, Protocol):
    """A pool with its health (`lb.pool.Pool`): what the checker probes and reports to."""

    @property
    def health(self) -> PoolHealth: ...

    on_members: Callable[[], None] | None


class HealthChecker:
    """The health service of one pool: its active checks, when configured, and its health timers
    (ejections, slow start), which live as long as the app runs."""

    def __init__(
        self,
        pool: Checked,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.pool = pool
        self.client = client
        self.config = pool.config.health_check
        self._clock = clock
        self._rng = rng or random.Random()
        self._tasks: dict[Backend, asyncio.Task[None]] = {}

    def __repr__(self) -> str:
        return f"<HealthChecker {self.pool.name} [{len(self._tasks)} checking]>"

    async def start(self) -> None:
        self.pool.health.start()
        if self.config is None or self._tasks:
            return
        self.pool.on_members = self.sync
        self.sync()

    def sync(self) -> None:
        """Check every backend the pool has now: backends added and removed at run time (admin
        API, discovery) gain or lose their checks."""
        config = self.config
        if config is None:
            return
        members = set(self.pool.backends.values())
        for backend in [b for b in self._tasks if b not in members]:
            self._tasks.pop(backend).cancel()
        loop = asyncio.get_running_loop()
        for backend in members - self._tasks.keys():
            name = f"lb health check {self.pool.name}/{backend.id}"
            self._tasks[backend] = loop.create_task(self._run(backend, config), name=name)

    async def stop(self) -> None:
        if self.pool.on_members == self.sync:
            self.pool.on_members = None
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.pool.health.stop()

    async def _run(self, backend: Backend, config: HealthCheckConfig) -> None:
        pool = self.pool
        metrics = pool.health.metrics
        # Until its first check completes a backend keeps the state it has (healthy at start).
        state = CheckState(
            config.healthy_threshold,
            config.unhealthy_threshold,
            healthy=backend.healthy,
            now=self._clock(),
        )
        # The first check comes soon, spread over a fraction of the interval.
        delay = self._rng.random() * config.interval * config.jitter
        while True:
            await asyncio.sleep(delay)
            result, detail, conclusive = await self.check(backend, config)
            metrics.health_check(pool.name, backend.id, result)
            now = self._clock()
            if conclusive:
                down_for = state.since(now)
                healthy = state.observe(result == SUCCESS, now)
                if healthy is not None:
                    pool.health.checked(backend, healthy, detail, down_for)
            # Counted from the end of this check, not its start: a slow check never makes the
            # next one start at once (SPEC 5).
            delay = check_delay(config.interval, config.jitter, self._rng.random())

    async def check(self, backend: Backend, config: HealthCheckConfig) -> tuple[str, str, bool]:
        """One check: (result, what was seen, whether it says anything about the backend)."""
        headers = [(b"user-agent", _USER_AGENT)]
        if config.host:
            headers.append((b"host", config.host.encode("latin-1")))
        timeout = config.timeout
        request = httpx.Request(
            config.method,
            backend.url + config.path,
            headers=headers,
            extensions={
                "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout},
                # A pool's `limits` hold traffic, not checks (as in Envoy): a backend whose
                # queue is full is still checked, on a connection of the check's own if need be.
                UNLIMITED: True,
            },
        )
        try:
            async with asyncio.timeout(timeout):
                response = await self.client.send(request, stream=True)
                try:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read > _BODY_LIMIT:
                            break
                finally:
                    await response.aclose()
        except httpx.PoolTimeout:
            # Every connection to the backend is busy with traffic: that says nothing about its
            # health (passive health sees overload).
            return ERROR, "no free connection to the backend", False
        except (TimeoutError, httpx.TimeoutException):
            return TIMEOUT, f"no answer within {timeout:g}s", True
        except httpx.HTTPError as exc:
            return ERROR, f"{type(exc).__name__} ({exc})" if str(exc) else type(exc).__name__, True
        status = response.status_code
        for low, high in config.expected_status:
            if low <= status <= high:
                return SUCCESS, f"status {status}", True
        return FAILURE, f"status {status}", True
