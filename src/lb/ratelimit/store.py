"""What a rate-limit store is: one atomic decision per request for a key under a fixed limit.

Stores raise `StoreUnavailable` (and only that) when they cannot decide; the layer then follows
`on_store_error`. A store that holds connections exposes async `start()`/`stop()` and is run as one
of the app's services.
"""

from __future__ import annotations

from typing import Protocol

from lb.exceptions import LBError
from lb.ratelimit.gcra import Decision, Limit


class StoreUnavailable(LBError):
    """The store could not decide (Redis down, slow or refusing); the cause is chained."""


class Store(Protocol):
    """Decides for one zone: every key in it shares `limit`."""

    limit: Limit

    async def decide(self, key: str) -> Decision:
        """Count one request for `key` and say whether it may pass. Raises StoreUnavailable."""
        ...
