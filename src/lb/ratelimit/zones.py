"""Which store limits which route, for one generation, and what outlives a reload.

A zone is one allowance per key: the top-level `rate_limit` is the zone `global`, shared by every
route that inherits it; a route with its own `rate_limit` is a zone of its own, named by its host
and path prefix. A reload keeps a zone's store (and so its buckets) when the zone's config is
unchanged, and Redis connections are shared by URL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from lb.config import Config, RateLimitConfig
from lb.metrics import Metrics
from lb.ratelimit.gcra import Limit
from lb.ratelimit.memory import MemoryStore
from lb.ratelimit.middleware import RateLimit
from lb.ratelimit.redis import RedisConnection, RedisStore
from lb.ratelimit.store import Store
from lb.redis_client import RedisClient
from lb.types import Handler

if TYPE_CHECKING:
    from lb.proxy.routing import Route

GLOBAL_ZONE = "global"
REDIS_PREFIX = "lb:rl:"

ZoneKey = tuple[str, RateLimitConfig]


def zone_of(route: Route, top: RateLimitConfig | None) -> tuple[str, RateLimitConfig] | None:
    """(zone name, config) limiting `route`, or None when the route is not limited."""
    own = route.config.rate_limit
    if own is False:
        return None
    if own is None:
        return None if top is None else (GLOBAL_ZONE, top)
    return f"route:{route.config.host or '*'}{route.config.path_prefix}", own


class RateLimiting:
    """The zones of one generation. `previous` (the generation before a reload) lends its stores;
    `redis` gives the runtime's client for a URL."""

    def __init__(
        self,
        config: Config,
        routes: Iterable[Route],
        metrics: Metrics,
        previous: RateLimiting | None = None,
        redis: Callable[[str], RedisClient] = RedisClient,
    ) -> None:
        self.metrics = metrics
        self._redis = redis
        self.stores: dict[ZoneKey, Store] = {}
        self.connections: dict[str, RedisConnection] = {}
        self._zones: dict[Route, ZoneKey] = {}
        old_stores: Mapping[ZoneKey, Store] = previous.stores if previous else {}
        old_connections = previous.connections if previous else {}
        for route in routes:
            zone = zone_of(route, config.rate_limit)
            if zone is None:
                continue
            self._zones[route] = zone
            if zone in self.stores:
                continue
            store = old_stores.get(zone)
            if store is None:
                store = self._new_store(zone, old_connections)
            elif isinstance(store, RedisStore):
                self.connections.setdefault(store.connection.url, store.connection)
            self.stores[zone] = store

    def __repr__(self) -> str:
        return f"<RateLimiting {len(self.stores)} zone(s), {len(self.connections)} redis>"

    def _new_store(self, zone: ZoneKey, old_connections: Mapping[str, RedisConnection]) -> Store:
        name, config = zone
        limit = Limit.of(config)
        if config.store == "memory":
            return MemoryStore(limit, config.max_keys)
        url = config.redis_url
        connection = self.connections.get(url) or old_connections.get(url)
        if connection is None:
            connection = RedisConnection(self._redis(url))
        self.connections[url] = connection
        return RedisStore(connection, limit, f"{REDIS_PREFIX}{name}:")

    def wrap(self, route: Route, app: Handler) -> Handler:
        """`app` behind the route's rate limit, or `app` itself when the route is not limited."""
        zone = self._zones.get(route)
        if zone is None:
            return app
        return RateLimit(app, self.stores[zone], zone[1], self.metrics)

    def services(self) -> Iterator[RedisClient]:
        """The Redis clients this generation uses, to start and stop with the app."""
        return (connection.redis for connection in self.connections.values())
