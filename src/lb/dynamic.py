"""Backends added while lb runs (the admin API, DNS discovery), on top of the config file's.

The runtime keeps their configs here so that every generation (a reload of the file) has them too,
and changes the live generation's pools directly, without a reload. A backend taken away drains:
it stays in its pool, draining, until it has no request in flight or `DRAIN_BOUND` has passed, and
only then leaves the pool and the runtime's table. Pure bookkeeping: no I/O here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lb.backend import Backend
from lb.config import BackendConfig, Config, PoolConfig

DRAIN_BOUND = 60.0  # seconds a removed backend may keep requests in flight before it goes anyway


def discovered_name(backend_id: str) -> str:
    """`web@10.0.0.7:8000` -> `web`: the name a discovered backend came from."""
    return backend_id.rpartition("@")[0]


@dataclass
class Leaving:
    pool: str
    backend: Backend
    deadline: float  # monotonic


class DynamicBackends:
    """The configs of the backends added at run time, per pool, and those draining away."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.configs: dict[str, dict[str, BackendConfig]] = {}  # pool -> id -> config
        self.leaving: list[Leaving] = []
        self._clock = clock

    def __repr__(self) -> str:
        count = sum(len(c) for c in self.configs.values())
        return f"<DynamicBackends [{count} added, {len(self.leaving)} leaving]>"

    def for_pool(self, pool: PoolConfig) -> list[BackendConfig]:
        """What `pool` (a config about to be made live) takes: not a backend whose id the file
        now gives (the file wins), nor one of a name the pool no longer discovers."""
        configured = {b.id for b in pool.backends}
        names = {target.name for target in pool.discover}
        return [
            c
            for c in self.configs.get(pool.name, {}).values()
            if c.id not in configured and (c.origin != "dns" or discovered_name(c.id) in names)
        ]

    def of(self, pool: str, origin: str, name: str | None = None) -> Iterator[BackendConfig]:
        """The added backends of `pool` with `origin` (and, for dns, discovered from `name`)."""
        for config in self.configs.get(pool, {}).values():
            if config.origin == origin and (name is None or discovered_name(config.id) == name):
                yield config

    def put(self, pool: str, config: BackendConfig) -> None:
        self.configs.setdefault(pool, {})[config.id] = config

    def drop(self, pool: str, backend_id: str) -> None:
        self.configs.get(pool, {}).pop(backend_id, None)

    def prune(self, config: Config) -> None:
        """Forget what `config`'s generation did not take (a reload made it live)."""
        for name in list(self.configs):
            pool = config.pools.get(name)
            if pool is None:
                del self.configs[name]
                continue
            kept = {c.id: c for c in self.for_pool(pool)}
            self.configs[name] = kept

    def leave(self, pool: str, backend: Backend) -> None:
        """`backend` (set draining) goes once idle, or after `DRAIN_BOUND`."""
        self.stay(backend)
        self.leaving.append(Leaving(pool, backend, self._clock() + DRAIN_BOUND))

    def stay(self, backend: Backend) -> bool:
        """`backend` is wanted again (its address came back): it no longer leaves."""
        before = len(self.leaving)
        self.leaving = [entry for entry in self.leaving if entry.backend is not backend]
        return len(self.leaving) != before

    def gone(self) -> list[Leaving]:
        """Those done draining (or out of time), taken off the list: the caller removes them."""
        now = self._clock()
        done = [e for e in self.leaving if e.backend.active_requests <= 0 or now >= e.deadline]
        if done:
            self.leaving = [e for e in self.leaving if e not in done]
        return done
