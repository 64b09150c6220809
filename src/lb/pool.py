"""A pool (Envoy: cluster, HAProxy: backend section): its backends, strategy and accounting.

The pool keeps the tuple of backends a pick chooses from cached and rebuilds it only when a backend
reports a change, so a pick costs the strategy's work and nothing more.

Panic mode (Envoy's): when no backend is usable, or fewer than `panic_threshold` percent of those in
service, the pool spreads traffic over every backend in service (not draining or disabled, weight
above zero) whatever its health, rather than answering 503 to everybody. `usable()` still tells the
truth about health (readyz reads it); `panic` says whether the pool is in panic mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from lb.backend import Backend
from lb.config import PoolConfig
from lb.config.tls import client_tls
from lb.health.monitor import PoolHealth
from lb.metrics import Metrics
from lb.strategy import PickRequest, Strategy, create_strategy
from lb.strategy.sticky import StickySessions

logger = logging.getLogger("lb.health")


class Pool:
    def __init__(
        self,
        config: PoolConfig,
        backends: Iterable[Backend] | None = None,
        metrics: Metrics | None = None,
        *,
        strategy: Strategy | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.strategy: Strategy = (
            strategy
            if strategy is not None
            else create_strategy(config.strategy, config.strategy_options)
        )
        self._on_start: Callable[[Backend], Any] | None = getattr(self.strategy, "on_start", None)
        self._on_done: Callable[[Backend, float, bool], Any] | None = getattr(
            self.strategy, "on_done", None
        )
        self.metrics = metrics if metrics is not None else Metrics()
        self.health = PoolHealth(self, self.metrics)
        # Bound once: Pool.done calls it on every request when passive health is on.
        self._record: Callable[[Backend, bool], None] | None = (
            self.health.record if config.passive_health is not None else None
        )
        # A context per pool (and generation): renewed files load into it on reload.
        self.tls = client_tls(config.tls) if config.tls is not None else None
        if config.tls is not None and not config.tls.verify:
            logging.getLogger("lb.tls").warning(
                "pool %s: tls.verify is false: backend certificates are not checked", self.name
            )
        self.sticky = StickySessions(config.sticky, config.name) if config.sticky else None
        self.backends: dict[str, Backend] = {}
        # Told when a backend joins or leaves at run time (the health checker starts or ends
        # its checks); set by whoever watches the members.
        self.on_members: Callable[[], None] | None = None
        self.panic = False
        self._usable: tuple[Backend, ...] = ()
        self._candidates: tuple[Backend, ...] = ()
        for backend in backends if backends is not None else ():
            self.backends[backend.id] = backend
            if self.sticky is not None:
                self.sticky.add(backend.id)
        if backends is None:
            # A pool of its own (tests, library use): nobody else holds these backends.
            for backend_config in config.backends:
                self.add(Backend(backend_config))
            self.attach()

    def __repr__(self) -> str:
        usable = len(self._usable)
        panic = ", panic" if self.panic else ""
        return (
            f"<Pool {self.name} [{self.config.strategy}, {usable}/{len(self.backends)} usable"
            f"{panic}]>"
        )

    def attach(self) -> None:
        """Take charge of its backends: from now on they report their changes to this pool (and
        no longer to the pool of the generation before). The runtime calls it at the swap, so
        building a pool changes nothing a live generation serves."""
        for backend in self.backends.values():
            backend.owner = self
        self.invalidate()
        if not self.panic:
            # Say so once at start: a pool that left panic mode in a previous generation must
            # not keep showing it.
            self.metrics.panic(self.name, False)

    def add(self, backend: Backend) -> None:
        backend.owner = self
        self.backends[backend.id] = backend
        if self.sticky is not None:
            self.sticky.add(backend.id)
        self.invalidate()
        if self.on_members is not None:
            self.on_members()

    def remove(self, backend_id: str) -> Backend | None:
        backend = self.backends.pop(backend_id, None)
        self.invalidate()
        if self.on_members is not None:
            self.on_members()
        return backend

    def owns(self, backend: Backend) -> bool:
        """Whether `backend` belongs to this pool now (a reload may have handed it to a new one)."""
        return backend.owner is self

    def invalidate(self) -> None:
        """A backend changed in a way that may alter who can be picked: rebuild the cached tuples.

        Changes are rare (health transitions, admin actions, slow-start steps), so this runs
        eagerly, which also lets panic mode be entered and left when it happens, not on the next
        request.
        """
        backends = self.backends.values()
        usable = tuple(b for b in backends if b.usable)
        candidates = usable
        panic = False
        threshold = self.config.panic_threshold
        if threshold is not None and len(usable) < len(backends):
            in_service = tuple(b for b in backends if b.admin_state == "active" and b.weight > 0)
            if in_service and (not usable or len(usable) * 100.0 < threshold * len(in_service)):
                panic = True
                candidates = in_service
        self._usable = usable
        self._candidates = candidates
        if panic != self.panic:
            self.panic = panic
            self._log_panic(len(usable), len(candidates))

    def _log_panic(self, usable: int, in_service: int) -> None:
        if self.panic:
            logger.warning(
                "pool %s entered panic mode: %d of %d backends in service usable, "
                "spreading traffic over all %d",
                self.name,
                usable,
                in_service,
                in_service,
            )
        else:
            logger.warning("pool %s left panic mode: %d backends usable", self.name, usable)
        self.metrics.panic(self.name, self.panic)

    def usable(self) -> tuple[Backend, ...]:
        """Backends that are healthy, not ejected, active and weighted: what readiness means."""
        return self._usable

    def candidates(self) -> tuple[Backend, ...]:
        """What a pick chooses from: the usable backends, or in panic mode all in service."""
        return self._candidates

    def pick(self, request: PickRequest, exclude: tuple[Backend, ...] = ()) -> Backend | None:
        """The backend for `request`: the one its sticky cookie pins, if that may take it, else
        the strategy's pick among the candidates not in `exclude` (those already tried)."""
        if self.sticky is not None:
            pinned = self.sticky.pinned(request, self.backends)
            if pinned is not None and pinned not in exclude:
                return pinned
        candidates = self._candidates
        if exclude:
            candidates = tuple(b for b in candidates if b not in exclude)
        return self.strategy.pick(candidates, request)

    def has_untried(self, tried: tuple[Backend, ...]) -> bool:
        """Whether a retry could go to a backend not in `tried`."""
        return any(b not in tried for b in self._candidates)

    def sticky_cookie(self, request: PickRequest, backend: Backend) -> bytes | None:
        """The Set-Cookie value to send with `backend`'s response, when sticky sessions are on
        and the request is not already pinned to it."""
        if self.sticky is None:
            return None
        return self.sticky.set_cookie(request, backend)

    def start(self, backend: Backend) -> None:
        backend.active_requests += 1
        backend.requests_total += 1
        if self._on_start is not None:
            self._on_start(backend)

    def done(
        self, backend: Backend, seconds: float, ok: bool, *, response_time: float | None = None
    ) -> None:
        """A request to `backend` finished after `seconds`; `ok` is False for connect errors,
        timeouts and 5xx. `response_time`, when known, is how long the response head took: the
        strategy is told that, so a long download, stream or WebSocket session does not make a
        backend look slow."""
        backend.active_requests -= 1
        backend.latency.record(seconds)
        if not ok:
            backend.failures_total += 1
        if self._on_done is not None:
            self._on_done(backend, seconds if response_time is None else response_time, ok)
        if self._record is not None:
            self._record(backend, ok)
