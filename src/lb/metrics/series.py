"""Per-backend series bound once (state copied at scrape time), and discovery's series."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge

    from lb.backend import Backend
    from lb.metrics import Metrics


class BackendSeries:
    """The bound children of one backend's state-derived series and what was last published."""

    __slots__ = (
        "backend",
        "up",
        "active",
        "attempts",
        "failures",
        "info",
        "sent_attempts",
        "sent_failures",
    )

    def __init__(self, metrics: Metrics, pool: str, backend: Backend) -> None:
        self.backend = backend
        self.up = metrics.backend_up.labels(pool, backend.id)
        self.active = metrics.backend_active.labels(pool, backend.id)
        self.attempts = metrics.backend_attempts.labels(pool, backend.id)
        self.failures = metrics.backend_failures.labels(pool, backend.id)
        self.info = metrics.backend_info.labels(pool, backend.id, backend.origin)
        self.info.set(1)
        # The Backend object's counters at the last publish: counters advance by the difference.
        self.sent_attempts = 0
        self.sent_failures = 0


def discovery_series(registry: CollectorRegistry) -> tuple[Gauge, Counter]:
    """`lb_backend_info{pool,backend,origin}` and `lb_discovery_lookups_total{name,result}`."""
    from prometheus_client import Counter, Gauge

    info = Gauge(
        "lb_backend_info",
        "1 for each backend, with where it came from: config, api (admin API) or dns.",
        ("pool", "backend", "origin"),
        registry=registry,
        multiprocess_mode="livemax",
    )
    lookups = Counter(
        "lb_discovery_lookups_total",
        "DNS lookups of discovered names by result: ok, or failed (the last good set is kept).",
        ("name", "result"),
        registry=registry,
    )
    return info, lookups
