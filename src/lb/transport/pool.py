"""One origin's connections: idle ones in a LIFO deque, a count of slots, FIFO waiters.

Bookkeeping only, and synchronous: every change happens with no `await` between reading and
writing a counter, so there are no locks, and no method looks at more than the ends of the
deques. Opening connections and waiting for a slot live in `lb.transport.http11`.

A *slot* is the right to hold one connection, open or being opened; `size` counts them and
never exceeds `max_connections`. A slot freed while requests wait passes straight to the
oldest waiter, and so does a connection released while requests wait.

`Limits` (a pool's `limits`, Envoy's circuit breakers) lower `max_connections`, bound the queue
(`max_pending`: the caller refuses a request rather than queue it past that) and retire a
connection after `max_requests` exchanges; without them the checks cost a compare on release.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, NamedTuple, Protocol, TypeVar


class Limits(NamedTuple):
    """An origin's circuit breakers; None: no limit of that kind (max_connections: the
    transport's own cap)."""

    max_connections: int | None = None
    max_pending: int | None = None
    max_requests: int | None = None  # exchanges per connection before it is retired


class Pooled(Protocol):
    """What the pool needs from a connection."""

    closed: bool  # set once, by the connection, before it calls `discard`
    pooled: bool  # in the idle deque; kept by the pool
    keepalive: float  # seconds it may stay idle once released; kept by the connection
    expires: float  # clock time after which it must not be used; set by the pool on release
    exchanges: int  # requests sent on it so far; counted by the connection

    def close(self) -> None:
        """Close gracefully; the connection then calls `discard` (exactly once)."""


C = TypeVar("C", bound=Pooled)

_UNLIMITED = 1 << 62


class OriginPool(Generic[C]):
    """The connections to one origin (scheme, host, port)."""

    __slots__ = (
        "origin",
        "max_connections",
        "max_idle",
        "keepalive_expiry",
        "clock",
        "idle",
        "size",
        "connections",
        "waiters",
        "closed",
        "default_max_connections",
        "max_pending",
        "max_requests",
    )

    def __init__(
        self,
        origin: str,
        *,
        max_connections: int,
        max_idle: int,
        keepalive_expiry: float,
        clock: Callable[[], float],
    ) -> None:
        self.origin = origin
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry  # a new connection's idle timeout (see Pooled)
        self.clock = clock
        # Oldest on the left, most recently released on the right: take from the right (a
        # warm connection), expire from the left (where, with one idle timeout per origin as
        # is usual, the `expires` values are sorted).
        self.idle: deque[C] = deque()
        self.size = 0
        self.connections: set[C] = set()  # open ones, for aclose(); touched on open/close only
        self.waiters: deque[asyncio.Future[C | None]] = deque()
        self.closed = False
        self.default_max_connections = max_connections  # the transport's cap, without limits
        self.max_pending: int | None = None
        # Never reached unless limited: release compares with it and needs no None check.
        self.max_requests = _UNLIMITED

    def limit(self, limits: Limits | None) -> None:
        """Apply `limits` (None: lift them). Raising max_connections gives the new slots to
        waiters at once; lowering it closes idle connections above it at once, and the busy
        ones above it stay open until they close (the cap only refuses new ones)."""
        limits = limits or Limits()
        cap = limits.max_connections
        self.max_connections = self.default_max_connections if cap is None else cap
        self.max_pending = limits.max_pending
        self.max_requests = limits.max_requests or _UNLIMITED
        idle = self.idle
        while idle and self.size > self.max_connections:
            oldest = idle.popleft()
            oldest.pooled = False
            oldest.close()  # frees its slot (discard)
        waiters = self.waiters
        while waiters and self.size < self.max_connections:
            waiter = waiters.popleft()
            if not waiter.done():
                self.size += 1
                waiter.set_result(None)  # a slot: the waiter opens a connection in it

    def overflows(self) -> bool:
        """Whether a request that would have to wait must be refused instead (max_pending)."""
        return self.max_pending is not None and len(self.waiters) >= self.max_pending

    def __repr__(self) -> str:
        return (
            f"<OriginPool {self.origin} [active: {self.active}, idle: {len(self.idle)}, "
            f"queued: {self.queued}]>"
        )

    @property
    def active(self) -> int:
        """Slots not idle: connections in use or being opened."""
        return self.size - len(self.idle)

    @property
    def queued(self) -> int:
        return sum(1 for waiter in self.waiters if not waiter.done())

    def take_idle(self) -> C | None:
        """The most recently released live connection, closing expired ones on the way."""
        idle = self.idle
        if not idle:
            return None
        now = self.clock()
        while idle:
            conn = idle.pop()
            conn.pooled = False
            if conn.expires > now and not conn.closed:
                return conn
            conn.close()
        return None

    def reserve(self, limited: bool = True) -> bool:
        """Take a slot for a new connection, if the origin has one free; `limited=False` (a
        health check) may go beyond `limits.max_connections`, up to the transport's cap."""
        if self.size < (self.max_connections if limited else self.default_max_connections):
            self.size += 1
            return True
        return False

    def release(self, conn: C) -> None:
        """Take back a healthy connection whose exchange is complete."""
        if conn.exchanges >= self.max_requests or self.size > self.max_connections:
            # Retired (max_requests): its slot goes to a waiter, if any. Or one too many (a
            # lowered cap, a health check's connection beyond it): the slot goes for good.
            conn.close()
            return
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if self.closed or self.max_idle <= 0:
            conn.close()
            return
        idle = self.idle
        if len(idle) >= self.max_idle:
            oldest = idle.popleft()
            oldest.pooled = False
            oldest.close()
        now = self.clock()
        conn.expires = now + conn.keepalive
        conn.pooled = True
        idle.append(conn)
        # Under steady load a LIFO pool never touches its oldest connections again: close
        # one expired connection per release, so they go without a scan or a timer.
        oldest = idle[0]
        if oldest.expires <= now:
            idle.popleft()
            oldest.pooled = False
            oldest.close()

    def discard(self, conn: C) -> None:
        """Forget a connection that has closed, and free its slot (called once per connection)."""
        if conn.pooled:
            # The backend closed an idle connection: O(idle), but only on that rare path.
            conn.pooled = False
            self.idle.remove(conn)
        self.connections.discard(conn)
        self.free_slot()

    def free_slot(self) -> None:
        """Give up a slot: to the oldest waiter (it will open a connection), else for good
        (also when the origin holds more than `max_connections`)."""
        waiters = self.waiters
        while waiters and self.size <= self.max_connections:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.size -= 1

    def prune(self) -> None:
        """Close the idle connections that have expired (a scan: from a timer, not a request)."""
        now = self.clock()
        if not any(conn.expires <= now for conn in self.idle):
            return
        expired = [conn for conn in self.idle if conn.expires <= now]
        self.idle = deque(conn for conn in self.idle if conn.expires > now)
        for conn in expired:
            conn.pooled = False
            conn.close()

    def close(self, error: Callable[[], BaseException]) -> list[C]:
        """Refuse new work: fail the waiters with `error()`; returns the connections to close."""
        self.closed = True
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error())
        return list(self.connections)
