"""One configuration made live: pools, router, per-route handler chains and the admin app.

A reload builds a new generation and swaps it in one assignment; requests hold the generation they
started with. Backends that stay (same pool, same id and URL) are carried over with their health,
counters and strategy state.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from lb.access import ClientFilter
from lb.admin import build_admin
from lb.backend import Backend
from lb.bodylimit import BodyLimit
from lb.cache import Cache
from lb.config import Config
from lb.health import HealthChecker
from lb.pool import Pool
from lb.proxy import Proxy
from lb.ratelimit import RateLimiting
from lb.routing import Route, Router
from lb.websocket import proxy_websocket

if TYPE_CHECKING:
    from lb.app import LoadBalancer, Service


class Generation:
    def __init__(
        self, config: Config, app: LoadBalancer, previous: Generation | None = None
    ) -> None:
        self.config = config
        self.pools: dict[str, Pool] = {}
        for name, pool_config in config.pools.items():
            old = previous.pools.get(name) if previous is not None else None
            backends = []
            for backend_config in pool_config.backends:
                kept = old.backends.get(backend_config.id) if old is not None else None
                if kept is not None and kept.url == backend_config.url:
                    kept.config_weight = backend_config.weight
                    kept.weight = backend_config.weight
                    backends.append(kept)
                else:
                    backends.append(Backend(backend_config))
            self.pools[name] = Pool(pool_config, backends, app.metrics)
        self.router = Router(config.routes, self.pools)
        self.proxies = {
            name: Proxy(pool, app.transport, metrics=app.metrics)
            for name, pool in self.pools.items()
        }
        # A reload that keeps the cache config keeps the cache (entries, store connection).
        old_cache = previous.cache if previous is not None else None
        self.cache: Cache | None = None
        if config.cache is not None:
            same = old_cache is not None and old_cache.config == config.cache
            self.cache = old_cache if same else Cache(config.cache, app.metrics)
        self.rate_limits: RateLimiting = RateLimiting(
            config,
            self.router.all(),
            app.metrics,
            previous.rate_limits if previous is not None else None,
        )
        # WebSocket upgrades take their own chain: the same rate limit, then the relay.
        self.websocket_handlers: dict[Route, Any] = {}
        for route in self.router.all():
            route.handler = self._handler(route, app)
            self.websocket_handlers[route] = _guard(
                route,
                self.rate_limits.wrap(route, partial(proxy_websocket, pool=self.pools[route.pool])),
            )
        self.admin_prefix = config.admin.path_prefix.encode()
        self.metrics_path = config.metrics.path.encode()
        # With the admin API on its own socket (fixed at start: `app.admin_listen`), the traffic
        # port answers only the probes itself and proxies the rest of the prefix.
        self.probe_paths: frozenset[bytes] | None = None
        if app.admin_listen is not None:
            self.probe_paths = frozenset(self.admin_prefix + p for p in (b"/healthz", b"/readyz"))
        self.admin = build_admin(app, self)
        self._client = app.client

    def __repr__(self) -> str:
        return f"<Generation {self.config.summary()}>"

    def _handler(self, route: Route, app: LoadBalancer) -> Any:
        """The ASGI chain for one route: client filter, body limit, rate limit, then cache, then
        the proxy."""
        handler: Any = self.proxies[route.pool]
        if self.cache is not None and route.config.cache:
            handler = self.cache.layer(handler)
        handler = self.rate_limits.wrap(route, handler)
        limit = route.config.max_body_bytes
        if limit is None:
            limit = self.config.server.max_body_bytes
        if limit is not None:
            handler = BodyLimit(handler, limit)
        return _guard(route, handler)

    def is_admin_path(self, raw_path: bytes) -> bool:
        """Whether the traffic port answers `raw_path` with the admin app."""
        if self.probe_paths is not None:
            return raw_path in self.probe_paths
        prefix = self.admin_prefix
        if raw_path.startswith(prefix) and (
            len(raw_path) == len(prefix) or raw_path[len(prefix)] == 0x2F  # "/"
        ):
            return True
        return raw_path == self.metrics_path

    def services(self) -> Iterator[Service]:
        """Background services this generation needs running (health checks, ...)."""
        yield from self.rate_limits.services()
        if self.cache is not None:
            yield self.cache
        for pool in self.pools.values():
            config = pool.config
            if config.health_check is not None or config.passive_health is not None:
                yield HealthChecker(pool, self._client)


def _guard(route: Route, handler: Any) -> Any:
    """`handler` behind the route's allow/deny lists, if it has any: refused clients reach
    nothing else (no rate-limit key, no cache lookup, no backend)."""
    config = route.config
    if config.allow or config.deny:
        return ClientFilter(handler, config.allow, config.deny)
    return handler
