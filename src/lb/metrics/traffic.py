"""Counters of a route's traffic control: mirrored copies and a pool's circuit breakers.

Neither is counted per request of the main path (a mirror copy is a request of its own, an
overflow a refusal), so they are plain prometheus-client children, bound on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter


class TrafficMetrics:
    """`lb_mirror_requests_total` and `lb_pool_overflows_total`, on one app's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter

        self.mirror_requests = Counter(
            "lb_mirror_requests_total",
            "Mirrored copies by result: sent (the mirror answered below 500), dropped (not made: "
            "over max_in_flight, body too large or streamed, no backend), failed (error or 5xx).",
            ("pool", "mirror_pool", "result"),
            registry=registry,
        )
        self.overflows = Counter(
            "lb_pool_overflows_total",
            "Requests refused at once by a pool's limits (limit: max_pending).",
            ("pool", "limit"),
            registry=registry,
        )
        self._mirror_children: dict[tuple[str, str, str], Counter] = {}
        self._overflow_children: dict[tuple[str, str], Counter] = {}

    def mirror(self, pool: str, mirror_pool: str, result: str) -> None:
        """A copy of a request to `pool` for `mirror_pool`: result sent | dropped | failed."""
        key = (pool, mirror_pool, result)
        child = self._mirror_children.get(key)
        if child is None:
            child = self._mirror_children[key] = self.mirror_requests.labels(*key)
        child.inc()

    def overflow(self, pool: str, limit: str) -> None:
        """A request to `pool` refused by its `limits` (`limit`: which one)."""
        key = (pool, limit)
        child = self._overflow_children.get(key)
        if child is None:
            child = self._overflow_children[key] = self.overflows.labels(*key)
        child.inc()
