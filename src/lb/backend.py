"""A backend (Envoy: endpoint, HAProxy: server) and the state the balancer keeps about it.

State changes happen in plain synchronous methods, never across an `await`, so no locks are needed
(the httpcore rule). The owning pool is told about every change that alters who may be picked, so it
can keep its list of usable backends cached instead of filtering on every request.

A `Backend` lives as long as the process serves it (the runtime's table keys it by pool, id and
URL): a reload that keeps it hands the same object to the new generation's pool, with its health,
ejection, slow-start ramp, strategy data and in-flight count.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol
from urllib.parse import urlsplit

from lb.config import BackendConfig, Origin

AdminState = Literal["active", "draining", "disabled"]
State = Literal["healthy", "unhealthy", "draining", "disabled"]

_WINDOW = 1024  # latency samples kept per backend for percentiles


class LatencyWindow:
    """The last `_WINDOW` latencies in a preallocated ring: O(1) to record, sorted when read."""

    __slots__ = ("_samples", "_next", "_count")

    def __init__(self) -> None:
        self._samples = [0.0] * _WINDOW
        self._next = 0
        self._count = 0

    def record(self, seconds: float) -> None:
        self._samples[self._next] = seconds
        self._next = (self._next + 1) % _WINDOW
        if self._count < _WINDOW:
            self._count += 1

    def percentiles(self, *qs: float) -> list[float]:
        if not self._count:
            return [0.0 for _ in qs]
        ordered = sorted(self._samples[: self._count])
        last = len(ordered) - 1
        return [ordered[min(last, max(0, math.ceil(q * len(ordered)) - 1))] for q in qs]


class Owner(Protocol):
    """The pool a backend reports its changes to (`lb.pool.Pool`)."""

    def invalidate(self) -> None: ...


class Backend:
    """One upstream server of a pool, with its health, admin state and load counters."""

    __slots__ = (
        "id",
        "url",
        "scheme",
        "host",
        "port",
        "authority",
        "config_weight",
        "weight",
        "admin_state",
        "healthy",
        "ejected_until",
        "consecutive_failures",
        "active_requests",
        "requests_total",
        "failures_total",
        "latency",
        "strategy_data",
        "ramp_started",
        "owner",
        "origin",
    )

    def __init__(self, config: BackendConfig) -> None:
        parts = urlsplit(config.url)
        self.id = config.id
        self.url = config.url
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.authority = parts.netloc.encode("ascii")
        # config_weight: what the operator set (config, admin); weight: what strategies use, which
        # slow start ramps up from a fraction of config_weight after a recovery.
        self.config_weight = config.weight
        self.weight: float = config.weight
        self.admin_state: AdminState = "active"
        self.healthy = True
        self.ejected_until = 0.0  # monotonic time; passive health ejection
        self.consecutive_failures = 0  # passive health: failed requests in a row
        self.active_requests = 0
        self.requests_total = 0
        self.failures_total = 0
        self.latency = LatencyWindow()
        # Free slot for a strategy's per-backend bookkeeping (e.g. EWMA, smooth-WRR current weight).
        self.strategy_data: object = None
        # Slow start: when the running ramp began (monotonic), 0.0 when not ramping. Kept here so
        # a reload's new pool takes the ramp over where the old one left it.
        self.ramp_started = 0.0
        # The pool that serves it now: the only one it reports changes to, and the one whose
        # passive health may eject it. Set by `Pool.attach`, when a generation goes live.
        self.owner: Owner | None = None
        self.origin: Origin = config.origin  # config, api or dns: who made it

    def __repr__(self) -> str:
        return (
            f"<Backend {self.id} {self.url} [{self.state}, weight {self.weight}, "
            f"active {self.active_requests}]>"
        )

    @property
    def ejected(self) -> bool:
        return self.ejected_until > 0.0

    @property
    def state(self) -> State:
        if self.admin_state == "disabled":
            return "disabled"
        if self.admin_state == "draining":
            return "draining"
        if not self.healthy or self.ejected:
            return "unhealthy"
        return "healthy"

    @property
    def usable(self) -> bool:
        """May receive new requests: healthy, not ejected, active, and weight above zero."""
        return (
            self.admin_state == "active" and self.healthy and not self.ejected and self.weight > 0
        )

    def changed(self) -> None:
        if self.owner is not None:
            self.owner.invalidate()

    def set_admin_state(self, state: AdminState) -> None:
        if state != self.admin_state:
            self.admin_state = state
            self.changed()

    def set_weight(self, weight: float) -> None:
        if weight != self.weight:
            self.weight = weight
            self.changed()

    def set_healthy(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            self.changed()

    def set_ejected_until(self, until: float) -> None:
        was = self.ejected
        self.ejected_until = until
        if was != self.ejected:
            self.changed()
