"""Active health checks: the service that probes one pool's backends and feeds `CheckState`.

One task per backend, so a backend that hangs never delays the checks of the others; each task
bounds a check by its `timeout` and waits `interval` ± jitter after it ended before the next one,
so checks of one backend never overlap, even when `timeout` exceeds `interval` (SPEC 5).
The tasks are kept referenced and cancelled on `stop()`.

With several workers (a `Leader` and a `SharedHealth` given), only the instance's leader runs the
active checks (SPEC 5: once per interval per instance) and publishes each transition; every worker
adopts what the shared document says (the leader's verdicts, any worker's ejections). A worker that
becomes the leader first reads the document, so its checks start from the state the instance had.
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
from lb.health.shared import Entry, SharedHealth
from lb.health.thresholds import CheckState, check_delay
from lb.instance import Leader, LeaderOnly
from lb.transport import UNLIMITED
from lb.types import Service

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
        leader: Leader | None = None,
        shared: SharedHealth | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.pool = pool
        self.client = client
        self.config = pool.config.health_check
        self.shared = shared
        self._clock = clock
        self._rng = rng or random.Random()
        self._tasks: dict[Backend, asyncio.Task[None]] = {}
        self._checking = False  # this worker runs the active checks (it leads, or is alone)
        active = _ActiveChecks(self)
        self._checks: Service = LeaderOnly(leader, active) if leader is not None else active
        self._unsubscribe: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<HealthChecker {self.pool.name} [{len(self._tasks)} checking]>"

    async def start(self) -> None:
        shared = self.shared
        self.pool.health.start(self._publish if shared is not None else None)
        if shared is not None and self._unsubscribe is None:
            self._unsubscribe = shared.subscribe(self._adopt)
            self._adopt(shared.entries())  # what the instance knows, before this worker serves
        if self.config is None:
            return
        self.pool.on_members = self.sync
        await self._checks.start()

    def sync(self) -> None:
        """Check every backend the pool has now: backends added and removed at run time (admin
        API, discovery) gain or lose their checks (on the worker that runs them; the others
        adopt what the instance knows of a backend they gained)."""
        config = self.config
        if config is None:
            return
        shared = self.shared
        if not self._checking:
            if shared is not None:
                self._adopt(shared.entries())
            return
        members = set(self.pool.backends.values())
        for backend in [b for b in self._tasks if b not in members]:
            self._tasks.pop(backend).cancel()
        loop = asyncio.get_running_loop()
        for backend in members - self._tasks.keys():
            if shared is not None:
                # The state its checks start from, for the other workers: a stale entry (a
                # backend removed and added again) must not outlive them there.
                shared.publish(self.pool.name, backend.id, backend.url, healthy=backend.healthy)
            name = f"lb health check {self.pool.name}/{backend.id}"
            self._tasks[backend] = loop.create_task(self._run(backend, config), name=name)

    async def stop(self) -> None:
        if self.pool.on_members == self.sync:
            self.pool.on_members = None
        await self._checks.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.pool.health.stop()

    def start_checks(self) -> None:
        """Run the active checks in this worker (it leads, or is alone)."""
        if self._checking:
            return
        if self.shared is not None:
            self.shared.refresh()  # a new leader starts from the latest verdicts, not a stale copy
        self._checking = True
        self.sync()

    async def stop_checks(self) -> None:
        self._checking = False
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _publish(self, backend: Backend, field: str, value: object) -> None:
        if self.shared is not None:
            self.shared.publish(self.pool.name, backend.id, backend.url, **{field: value})

    def _adopt(self, entries: list[Entry]) -> None:
        pool = self.pool
        checking = self._checking  # then this worker's own checks are the verdict
        for entry in entries:
            if entry.get("pool") != pool.name:
                continue
            backend = pool.backends.get(str(entry.get("id")))
            if backend is None or backend.url != entry.get("url"):
                continue
            healthy = entry.get("healthy")
            until = entry.get("ejected_until")
            pool.health.adopt(
                backend,
                healthy if isinstance(healthy, bool) and not checking else None,
                float(until) if isinstance(until, int | float) else 0.0,
            )

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


class _ActiveChecks:
    """The active checks of a `HealthChecker` as a service of their own, to run on the leader."""

    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker

    def __repr__(self) -> str:
        return f"<ActiveChecks {self.checker.pool.name}>"

    async def start(self) -> None:
        self.checker.start_checks()

    async def stop(self) -> None:
        await self.checker.stop_checks()
