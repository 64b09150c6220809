"""The limit arithmetic (GCRA), as pure functions of a stored TAT and the current time.

GCRA keeps one number per key, the theoretical arrival time (TAT): the moment at which the key's
bucket is full again. A request costs one emission interval (1 / rate); it is allowed when the new
TAT lies no more than `burst` intervals ahead of now. A TAT in the past is a full bucket, the same
as no entry at all, which is why stores may drop such entries freely. The Redis store runs the same
rule in Lua and hands its result to `decision()`, so both stores answer identically.
"""

from __future__ import annotations

import math

from lb.config import RateLimitConfig


class Limit:
    """`rate` requests per second with bursts of `burst`, precomputed for the hot path."""

    __slots__ = ("rate", "burst", "interval", "capacity", "tolerance", "limit_header")

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got rate={rate} burst={burst}")
        self.rate = rate
        self.burst = burst
        self.interval = 1.0 / rate  # seconds one request costs
        self.capacity = burst * self.interval  # how far ahead of now the TAT may run
        # Float sums of intervals drift by a few ulps (and Redis works in microseconds near 1.7e15,
        # where one ulp is 0.25 us); comparisons allow 1 us, or less for absurdly high rates, so
        # `burst` requests at one instant are all allowed however the sum rounds.
        self.tolerance = min(1e-6, self.interval * 1e-3)
        self.limit_header = str(burst).encode()

    @classmethod
    def of(cls, config: RateLimitConfig) -> Limit:
        return cls(config.rate, config.burst)

    def __repr__(self) -> str:
        return f"<Limit {self.rate:g}/s burst={self.burst}>"


class Decision:
    """The answer for one request, in the whole numbers the response headers carry."""

    __slots__ = ("allowed", "remaining", "reset", "retry_after")

    def __init__(self, allowed: bool, remaining: int, reset: int, retry_after: int) -> None:
        self.allowed = allowed
        self.remaining = remaining  # whole requests the key may still make now
        self.reset = reset  # whole seconds, rounded up, until the bucket is full
        self.retry_after = retry_after  # whole seconds, rounded up, until allowed (0: allowed)

    def __repr__(self) -> str:
        verdict = "allowed" if self.allowed else f"rejected retry_after={self.retry_after}"
        return f"<Decision {verdict} remaining={self.remaining} reset={self.reset}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return (self.allowed, self.remaining, self.reset, self.retry_after) == (
            other.allowed,
            other.remaining,
            other.reset,
            other.retry_after,
        )

    __hash__ = None  # type: ignore[assignment]


def decide(limit: Limit, tat: float | None, now: float) -> tuple[float | None, Decision]:
    """One request at `now` against stored `tat` (None: no entry).

    Returns the TAT to store (None when rejected: nothing changes) and the decision.
    """
    start = now if tat is None or tat < now else tat
    new_tat = start + limit.interval
    wait = new_tat - now - limit.capacity
    if wait > limit.tolerance:
        return None, decision(limit, False, start - now, wait)
    return new_tat, decision(limit, True, new_tat - now, 0.0)


def decision(limit: Limit, allowed: bool, ahead: float, wait: float) -> Decision:
    """A decision from how far the TAT now lies ahead of the clock and, if rejected, the wait."""
    tolerance = limit.tolerance
    if allowed:
        # Tokens left = (capacity - ahead) / interval; the tolerance keeps 18.9999999 from being 18.
        remaining = int((limit.capacity - ahead + tolerance) / limit.interval)
        if remaining < 0:
            remaining = 0
        retry_after = 0
    else:
        remaining = 0
        retry_after = max(1, math.ceil(wait - tolerance))
    reset = math.ceil(ahead - tolerance) if ahead > tolerance else 0
    return Decision(allowed, remaining, reset, retry_after)


def rate_limit_headers(limit: Limit, result: Decision) -> list[tuple[bytes, bytes]]:
    """RateLimit-Limit (= burst), RateLimit-Remaining, RateLimit-Reset for a response head."""
    return [
        (b"ratelimit-limit", limit.limit_header),
        (b"ratelimit-remaining", str(result.remaining).encode()),
        (b"ratelimit-reset", str(result.reset).encode()),
    ]
