"""The hot path's side of the metrics: plain counts kept per request, handed to prometheus-client
in one go before every read of the registry (`Flusher`), so a request costs additions, not calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

# Proxy latencies: a cache hit or a loopback backend answers well under a millisecond, a slow
# upstream or a long poll takes tens of seconds.
BUCKETS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


class Tally:
    """A counter child's count, kept on the hot path; `sent` is what prometheus-client has."""

    __slots__ = ("counter", "count", "sent")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.count = 0
        self.sent = 0

    def flush(self) -> None:
        count = self.count  # read once: the event loop may add to it meanwhile
        if count != self.sent:
            self.counter.inc(count - self.sent)
            self.sent = count


class DurationTally:
    """A histogram child's observations: the sum and one count per bucket (the last is +Inf)."""

    __slots__ = ("histogram", "sum", "buckets", "sent_sum", "sent_buckets")

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.sum = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.sent_sum = 0.0
        self.sent_buckets = [0] * (len(BUCKETS) + 1)

    def flush(self) -> None:
        # prometheus-client has no public way to add several observations at once: its own
        # Histogram.observe adds to `_sum` and to the first bucket whose bound holds the value,
        # which is what this does with the counts gathered since the last flush.
        histogram = self.histogram
        total = self.sum
        if total != self.sent_sum:
            histogram._sum.inc(total - self.sent_sum)
            self.sent_sum = total
        sent = self.sent_buckets
        for i, count in enumerate(list(self.buckets)):
            if count != sent[i]:
                histogram._buckets[i].inc(count - sent[i])
                sent[i] = count


class Flusher:
    """Registered first in the registry: collecting it flushes the tallies into the metrics
    collected after it, so every read of the registry sees every event."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def describe(self) -> list[object]:
        return []

    def collect(self) -> Iterator[object]:
        self._flush()
        return iter(())
