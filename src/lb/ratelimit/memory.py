"""The in-process store: one TAT per key in a bounded LRU table, O(1) per decision.

Exact within one process only: every worker keeps its own table. When the table is full, a new key
takes the place of an entry whose bucket is already full again (its TAT has passed, so dropping it
loses nothing); only when a sample from the least recently used end holds no such entry is a live
one dropped, the one among them closest to full. A flood of new keys, which each cost one
interval, therefore pushes out its own stale entries long before the entry of a client still
inside its window.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from lb.ratelimit.gcra import Decision, Limit, decide

# Entries looked at from the LRU end to find one that may go; bounds the cost of an insert.
EVICTION_SAMPLE = 8


class MemoryStore:
    """Buckets for one zone in this process. `clock` is injectable for tests (monotonic seconds)."""

    def __init__(
        self, limit: Limit, max_keys: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.limit = limit
        self.max_keys = max_keys
        self._clock = clock
        self._tats: OrderedDict[str, float] = OrderedDict()
        self.evicted_live = 0  # live entries dropped because the table was full of live ones

    def __repr__(self) -> str:
        return f"<MemoryStore {self.limit!r} [{len(self._tats)}/{self.max_keys} keys]>"

    def __len__(self) -> int:
        return len(self._tats)

    async def decide(self, key: str) -> Decision:
        return self.decide_now(key)

    def decide_now(self, key: str) -> Decision:
        """The synchronous decision: no await between reading and writing the entry."""
        now = self._clock()
        tats = self._tats
        tat = tats.get(key)
        new_tat, result = decide(self.limit, tat, now)
        if tat is not None:
            tats.move_to_end(key)
            if new_tat is not None:
                tats[key] = new_tat
        elif new_tat is not None:
            if len(tats) >= self.max_keys:
                self._make_room(now)
            tats[key] = new_tat
        return result

    def _make_room(self, now: float) -> None:
        tats = self._tats
        victim: str | None = None
        victim_tat = float("inf")
        for _ in range(min(EVICTION_SAMPLE, len(tats))):
            key = next(iter(tats))
            tat = tats[key]
            if tat <= now:
                del tats[key]  # already full again: same as absent
                return
            if tat < victim_tat:
                victim, victim_tat = key, tat
            tats.move_to_end(key)  # live: look further on next time
        if victim is not None:
            del tats[victim]
            self.evicted_live += 1
