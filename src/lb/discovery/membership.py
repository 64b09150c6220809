"""The pure side of discovery: which endpoints a pool has after a lookup, and when to look again."""

from __future__ import annotations

from dataclasses import dataclass

from lb.discovery.resolver import Endpoint

MIN_DELAY = 1.0  # a TTL of 0 must not make lb query its resolvers in a busy loop


def endpoint_id(name: str, endpoint: Endpoint) -> str:
    """`web@10.0.0.7:8000`, `web@[fd00::7]:8000`: the backend id of one discovered endpoint."""
    address, port = endpoint
    host = f"[{address}]" if ":" in address else address
    return f"{name}@{host}:{port}"


def next_delay(interval: float, ttl: float | None, floor: float = MIN_DELAY) -> float:
    """The next lookup comes after `interval`, sooner when the records' TTL is shorter (not below
    `floor`, which bounds the TTL only: an interval set below it is the operator's choice);
    after a failed lookup (`ttl` None) the interval as configured."""
    if ttl is None:
        return interval
    return min(interval, max(floor, ttl))


@dataclass(frozen=True)
class Change:
    added: frozenset[Endpoint]
    removed: frozenset[Endpoint]
    kept: frozenset[Endpoint]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class Membership:
    """The last good set of one target's endpoints. A failed or empty answer keeps it as it is
    (a resolver outage must not empty a pool); `failing` says whether the last lookup failed, so
    the failure is logged once, when it starts, and its end once."""

    def __init__(self) -> None:
        self.endpoints: frozenset[Endpoint] = frozenset()
        self.failing = False
        self.lookups = 0
        self.failures = 0

    def __repr__(self) -> str:
        state = "failing" if self.failing else "ok"
        return f"<Membership [{len(self.endpoints)} endpoints, {state}]>"

    def answered(self, endpoints: frozenset[Endpoint]) -> Change:
        if not endpoints:  # an empty answer is treated as a failure, not as "scale to zero"
            return self.failed()
        self.lookups += 1
        self.failing = False
        change = Change(
            added=endpoints - self.endpoints,
            removed=self.endpoints - endpoints,
            kept=endpoints & self.endpoints,
        )
        self.endpoints = endpoints
        return change

    def failed(self) -> Change:
        self.lookups += 1
        self.failures += 1
        self.failing = True
        return Change(frozenset(), frozenset(), self.endpoints)
