"""A pool (Envoy: cluster, HAProxy: backend section): its backends, strategy and accounting.

The pool keeps the tuple of usable backends cached and rebuilds it only when a backend reports a
change, so a pick costs the strategy's work and nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from lb.backend import Backend
from lb.config import PoolConfig
from lb.sticky import StickySessions
from lb.strategy import PickRequest, Strategy, create_strategy


class Pool:
    def __init__(self, config: PoolConfig, backends: Iterable[Backend] | None = None) -> None:
        self.name = config.name
        self.config = config
        self.strategy: Strategy = create_strategy(config.strategy, config.strategy_options)
        self._on_start: Callable[[Backend], Any] | None = getattr(self.strategy, "on_start", None)
        self._on_done: Callable[[Backend, float, bool], Any] | None = getattr(
            self.strategy, "on_done", None
        )
        self.sticky = StickySessions(config.sticky, config.name) if config.sticky else None
        self.backends: dict[str, Backend] = {}
        for backend in backends if backends is not None else map(Backend, config.backends):
            self.add(backend)
        self._usable: tuple[Backend, ...] | None = None

    def __repr__(self) -> str:
        usable = len(self.usable())
        return f"<Pool {self.name} [{self.config.strategy}, {usable}/{len(self.backends)} usable]>"

    def add(self, backend: Backend) -> None:
        backend._on_change = self.invalidate
        self.backends[backend.id] = backend
        self._usable = None
        if self.sticky is not None:
            self.sticky.add(backend.id)

    def remove(self, backend_id: str) -> Backend | None:
        backend = self.backends.pop(backend_id, None)
        self._usable = None
        return backend

    def invalidate(self) -> None:
        self._usable = None

    def usable(self) -> tuple[Backend, ...]:
        usable = self._usable
        if usable is None:
            usable = self._usable = tuple(b for b in self.backends.values() if b.usable)
        return usable

    def pick(self, request: PickRequest, exclude: tuple[Backend, ...] = ()) -> Backend | None:
        """The backend for `request`: the one its sticky cookie pins, if that may take it, else
        the strategy's pick among the usable backends not in `exclude` (those already tried)."""
        if self.sticky is not None:
            pinned = self.sticky.pinned(request, self.backends)
            if pinned is not None and pinned not in exclude:
                return pinned
        candidates = self.usable()
        if exclude:
            candidates = tuple(b for b in candidates if b not in exclude)
        return self.strategy.pick(candidates, request)

    def sticky_cookie(self, request: PickRequest, backend: Backend) -> bytes | None:
        """The Set-Cookie value to send with `backend`'s response, when sticky sessions are on
        and the request is not already pinned to it."""
        if self.sticky is None:
            return None
        return self.sticky.set_cookie(request, backend)

    def start(self, backend: Backend) -> None:
        backend.active_requests += 1
        backend.requests_total += 1
        if self._on_start is not None:
            self._on_start(backend)

    def done(
        self, backend: Backend, seconds: float, ok: bool, *, response_time: float | None = None
    ) -> None:
        """A request to `backend` finished after `seconds`. `response_time`, when known, is how
        long the response head took: the strategy is told that, so a long download, stream or
        WebSocket session does not make a backend look slow."""
        backend.active_requests -= 1
        backend.latency.record(seconds)
        if not ok:
            backend.failures_total += 1
        if self._on_done is not None:
            self._on_done(backend, seconds if response_time is None else response_time, ok)
