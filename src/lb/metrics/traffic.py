"""Counters of a route's traffic control: mirrored copies, a pool's circuit breakers, compression.

None is counted on every request of the main path (a mirror copy is a request of its own, an
overflow a refusal, a compressed response costs a thousand times the counting), so they are plain
prometheus-client children, bound on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter


class TrafficMetrics:
    """`lb_mirror_requests_total`, `lb_pool_overflows_total`, `lb_compressed_responses_total` and
    `lb_compression_bytes_total`, on one app's registry."""

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
        self.compressed_responses = Counter(
            "lb_compressed_responses_total",
            "Responses lb compressed (route `compress`), by content coding.",
            ("encoding",),
            registry=registry,
        )
        self.compression_bytes = Counter(
            "lb_compression_bytes_total",
            "Bytes of the responses lb compressed: stage=in as the backend sent them, "
            "stage=out as the client got them.",
            ("encoding", "stage"),
            registry=registry,
        )
        self._compress_children: dict[str, tuple[Counter, Counter, Counter]] = {}
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

    def compressed(self, encoding: str, bytes_in: int, bytes_out: int) -> None:
        """A response compressed with `encoding`: its size before and after."""
        children = self._compress_children.get(encoding)
        if children is None:
            children = self._compress_children[encoding] = (
                self.compressed_responses.labels(encoding),
                self.compression_bytes.labels(encoding, "in"),
                self.compression_bytes.labels(encoding, "out"),
            )
        responses, before, after = children
        responses.inc()
        before.inc(bytes_in)
        after.inc(bytes_out)
