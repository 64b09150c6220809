"""The discovery service: one loop per discovered name, looking it up again and again.

Each loop asks the resolvers, keeps the last good set in its `Membership`, and hands every good
answer to `on_answer(pool, target, endpoints)` (`Runtime.discovered`, which adds and drains the
backends). It looks again after `discovery.interval`, sooner when the records' TTL is shorter
(not below `MIN_DELAY`). A failed or empty answer changes nothing: it is logged when the failures
start and when they end, and counted in `lb_discovery_lookups_total`.

With several workers only the instance's leader runs this (`lb.instance.LeaderOnly`, see
`lb.runtime`); its answers reach the other workers through `lb.discovery.shared`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from lb.config import Config, DiscoverConfig, DiscoveryConfig
from lb.discovery.membership import Membership, next_delay
from lb.discovery.resolver import DiscoveryError, Endpoint, Resolver, Target

logger = logging.getLogger("lb.discovery")

Key = tuple[str, DiscoverConfig]  # (pool name, what it discovers)
OnAnswer = Callable[[str, DiscoverConfig, frozenset[Endpoint]], None]


class Counter(Protocol):
    """Where lookups are counted (`lb.metrics.Metrics.discovery_lookup`)."""

    def __call__(self, name: str, result: str) -> None: ...


class Discovery:
    """The lookups of every name the live config discovers; `configure` follows reloads."""

    def __init__(self, on_answer: OnAnswer, count: Counter | None = None) -> None:
        self.on_answer = on_answer
        self.count = count
        self.settings = DiscoveryConfig()
        self.resolver: Resolver | None = None
        self.members: dict[Key, Membership] = {}
        self._targets: set[Key] = set()
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self.started = False

    def __repr__(self) -> str:
        failing = sum(1 for m in self.members.values() if m.failing)
        return f"<Discovery [{len(self._targets)} names, {failing} failing]>"

    def configure(self, config: Config) -> None:
        """Look up what `config` discovers (a reload may add, drop or retime names)."""
        targets = {(name, t) for name, pool in config.pools.items() for t in pool.discover}
        if config.discovery != self.settings or self.resolver is None:
            self.settings = config.discovery
            self.resolver = Resolver(config.discovery.resolvers, config.discovery.timeout)
        self._targets = targets
        for key in [k for k in self.members if k not in targets]:
            del self.members[key]
        if self.started:
            self._sync()

    async def start(self) -> None:
        self.started = True
        self._sync()

    async def stop(self) -> None:
        self.started = False
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _sync(self) -> None:
        for key in [k for k in self._tasks if k not in self._targets]:
            self._tasks.pop(key).cancel()
        loop = asyncio.get_running_loop()
        for key in self._targets - self._tasks.keys():
            name = f"lb discovery {key[0]}/{key[1].name}"
            self._tasks[key] = loop.create_task(self._run(key), name=name)

    async def _run(self, key: Key) -> None:
        while True:
            delay = await self.lookup(key)
            await asyncio.sleep(delay)

    async def lookup(self, key: Key) -> float:
        """One lookup of `key`'s name, its answer handed on; returns the delay until the next."""
        pool, target = key
        members = self.members.setdefault(key, Membership())
        assert self.resolver is not None
        interval = self.settings.interval
        try:
            answer = await self.resolver.lookup(Target(target.kind, target.name, target.port))
        except DiscoveryError as exc:
            self._failed(key, members, str(exc))
            return next_delay(interval, None)
        except Exception as exc:  # noqa: BLE001 - whatever dnspython raises: keep the last set
            self._failed(key, members, f"{target.name}: {type(exc).__name__}: {exc}")
            return next_delay(interval, None)
        if not answer.endpoints:  # "scale to zero" from DNS is far likelier a broken zone
            self._failed(key, members, f"{target.name}: an empty answer")
            return next_delay(interval, None)
        if members.failing:
            logger.warning(
                "discovery of %s for pool %s answers again: %d address(es)",
                target.name,
                pool,
                len(answer.endpoints),
            )
        change = members.answered(answer.endpoints)
        self._count(target.name, "ok")
        if change:
            logger.info(
                "discovery of %s for pool %s: %d added, %d removed, %d kept",
                target.name,
                pool,
                len(change.added),
                len(change.removed),
                len(change.kept),
            )
        # Every good answer, changed or not: the runtime makes its set match (idempotent), which
        # also heals what a reload of the file may have left behind.
        self.on_answer(pool, target, members.endpoints)
        return next_delay(interval, answer.ttl)

    def _failed(self, key: Key, members: Membership, detail: str) -> None:
        pool, target = key
        self._count(target.name, "failed")
        if not members.failing:  # logged when it starts, not at every interval
            logger.warning(
                "discovery of %s for pool %s failed (%s): keeping the last %d address(es)",
                target.name,
                pool,
                detail,
                len(members.endpoints),
            )
        members.failed()

    def _count(self, name: str, result: str) -> None:
        if self.count is not None:
            self.count(name, result)
