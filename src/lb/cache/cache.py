"""`Cache`: one configured cache — its store and the in-process coordination around it.

It is shared by the cache layers of every cached route and survives a reload that keeps the same
`cache` config. Besides the store it holds the upstream requests in flight (so that concurrent
misses for one key wait for one of them), the background refreshes of stale-while-revalidate, and
a short memory of keys whose responses turned out uncacheable (those are not collapsed).

It is also a Service (start/stop): stopping cancels background refreshes and closes the store.
Since a generation that keeps the cache starts it again before the old one stops it, start and
stop are counted and only the last stop closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lb.cache.entry import Entry, select
from lb.cache.request import DirectivesMemo
from lb.cache.store import MemoryStore, Store, StoreDown, StoreError
from lb.redis_client import RedisClient

if TYPE_CHECKING:
    from lb.cache.layer import CacheLayer
    from lb.cache.request import CacheRequest
    from lb.config import CacheConfig
    from lb.metrics import Metrics

logger = logging.getLogger("lb.cache")

COLLAPSE_TIMEOUT = 5.0  # how long a request waits for another's identical upstream request
UNCACHEABLE_FOR = 30.0  # how long a key that answered uncacheable is not collapsed
_UNCACHEABLE_MAX = 4096


def create_store(config: CacheConfig, redis: Callable[[str], RedisClient] = RedisClient) -> Store:
    """The store `config` names; `redis` gives the runtime's client for a URL."""
    if config.store == "redis":
        from lb.cache.redis_store import RedisStore

        return RedisStore(redis(config.redis_url))
    return MemoryStore(config.max_entries, config.max_bytes)


class Cache:
    def __init__(
        self,
        config: CacheConfig,
        metrics: Metrics,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        collapse_timeout: float = COLLAPSE_TIMEOUT,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.store: Store = store if store is not None else create_store(config)
        # Wall-clock time: entries in a shared store are read by other machines.
        self.clock = clock
        self.collapse_timeout = collapse_timeout
        self.inflight: dict[bytes, asyncio.Event] = {}
        self.refreshing: dict[bytes, asyncio.Task[None]] = {}
        self._uncacheable: OrderedDict[bytes, float] = OrderedDict()
        self.directives_memo: DirectivesMemo = {}

    def __repr__(self) -> str:
        return (
            f"<Cache {self.store!r} [{len(self.inflight)} in flight, "
            f"{len(self.refreshing)} refreshing]>"
        )

    def layer(self, inner: Any) -> CacheLayer:
        from lb.cache.layer import CacheLayer

        return CacheLayer(inner, self)

    # -- lifecycle (Service) -------------------------------------------------------------------

    # Started once and stopped once: a reload that keeps this cache keeps it running (the runtime
    # starts and stops only the services one generation has and the other has not).
    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        tasks = list(self.refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.close()

    # -- store access: shared-store failures degrade to pass-through -----------------------------

    async def lookup(self, request: CacheRequest, now: float) -> Entry | None:
        """The stored response for `request`, if any. Raises StoreError."""
        for primary in request.lookup:
            entry = select(await self.store.variants(primary, now), request.headers)
            if entry is not None:
                return entry
        return None

    async def put(self, entry: Entry) -> bool:
        try:
            await self.store.put(entry, self.clock())
        except StoreError as exc:
            self.store_failed(exc)
            return False
        self._uncacheable.pop(entry.primary, None)
        return True

    async def invalidate(self, primaries: Sequence[bytes]) -> None:
        try:
            await self.store.invalidate(primaries)
        except StoreError as exc:
            self.store_failed(exc)

    async def purge(self, target: bytes | None) -> int:
        """Admin purge: `target` for every host, method and variant, or everything. Raises
        StoreError."""
        return await self.store.purge(target)

    def store_failed(self, exc: Exception) -> None:
        self.metrics.store_error("cache")
        if not isinstance(exc, StoreDown):  # one line per failure, not per request after it
            logger.warning("cache store error, passing through: %s", exc)

    # -- collapsing ------------------------------------------------------------------------------

    def collapsible(self, primary: bytes) -> bool:
        until = self._uncacheable.get(primary)
        if until is None:
            return True
        if until < time.monotonic():
            del self._uncacheable[primary]
            return True
        return False

    def uncacheable(self, primary: bytes) -> None:
        """This key's response was not stored: later misses for it go upstream side by side
        rather than queue behind each other (a hit-for-miss marker)."""
        marks = self._uncacheable
        marks[primary] = time.monotonic() + UNCACHEABLE_FOR
        marks.move_to_end(primary)
        while len(marks) > _UNCACHEABLE_MAX:
            marks.popitem(last=False)

    def lead(self, primary: bytes) -> Callable[[], None]:
        """Register an upstream request for `primary`; the returned function releases waiters."""
        event = asyncio.Event()
        self.inflight[primary] = event

        def release() -> None:
            if self.inflight.get(primary) is event:
                del self.inflight[primary]
            event.set()

        return release

    async def wait_for(self, event: asyncio.Event) -> None:
        try:
            async with asyncio.timeout(self.collapse_timeout):
                await event.wait()
        except TimeoutError:
            pass

    # -- stale-while-revalidate ------------------------------------------------------------------

    def refresh_in_background(self, key: bytes, refresh: Callable[[], Any]) -> None:
        """Run `refresh()` once per key at a time, kept referenced until it ends."""
        if key in self.refreshing:
            return
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._guarded(refresh))
        self.refreshing[key] = task

        def done(_: asyncio.Task[None]) -> None:
            if self.refreshing.get(key) is task:
                del self.refreshing[key]

        task.add_done_callback(done)

    async def _guarded(self, refresh: Callable[[], Any]) -> None:
        try:
            await refresh()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed refresh leaves the stale entry; never crash
            logger.exception("background cache refresh failed")
