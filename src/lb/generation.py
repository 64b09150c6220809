"""One configuration made live: pools, router, per-route handler chains and the admin app.

A generation is immutable once built and builds without touching the live one: `lb.runtime` makes
it live in one synchronous swap. Requests hold the generation they started with. Backends that stay
(same pool, same id and URL) are the same long-lived objects, with their health, counters and
strategy state.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Protocol

import httpx

from lb.admin import AdminView, build_admin
from lb.backend import Backend
from lb.cache import Cache
from lb.cache.cache import create_store
from lb.cache.redis_store import RedisStore
from lb.compress import Compress, Compression, Negotiate
from lb.config import BackendConfig, Config, PoolConfig
from lb.config.model import RouteTimeoutConfig
from lb.health import HealthChecker
from lb.health.shared import SharedHealth
from lb.instance import Leader
from lb.metrics import Metrics
from lb.pool import Pool
from lb.proxy.access import ClientFilter
from lb.proxy.bodylimit import BodyLimit
from lb.proxy.handler import Proxy
from lb.proxy.mirror import Mirror
from lb.proxy.redirect import Redirect
from lb.proxy.rewrite import HeaderRules, ResponseHeaders
from lb.proxy.routing import Route, Router
from lb.proxy.websocket import proxy_websocket
from lb.ratelimit import RateLimiting
from lb.redis_client import RedisClients
from lb.transport import Timeouts, Transport
from lb.types import Handler, Service


class Host(AdminView, Protocol):
    """What a generation is built from (`lb.runtime.Runtime`): the long-lived parts it uses, the
    live generation whose cache and rate-limit stores it may share, and the backend table."""

    transport: Transport
    client: httpx.AsyncClient
    metrics: Metrics
    redis: RedisClients
    admin_listen: tuple[str, int] | None
    leader: Leader
    shared_health: SharedHealth | None

    @property
    def live(self) -> Generation | None: ...

    def backend(self, pool: str, config: BackendConfig, checked: bool) -> Backend: ...

    def added_backends(self, pool: PoolConfig) -> list[BackendConfig]: ...


class Generation:
    @classmethod
    def build(cls, config: Config, runtime: Host) -> Generation:
        """The generation for `config`, built next to the live one without changing it: kept
        backends are taken from the runtime's table as they are, and what a reload changes about
        them is applied by `Runtime.swap`. If this raises, there is nothing to undo."""
        return cls(config, runtime)

    def __init__(self, config: Config, runtime: Host) -> None:
        self.config = config
        previous = runtime.live
        self.pools: dict[str, Pool] = {}
        for name, pool_config in config.pools.items():
            checked = pool_config.health_check is not None
            configs = [*pool_config.backends, *runtime.added_backends(pool_config)]
            backends = [runtime.backend(name, b, checked) for b in configs]
            # The same strategy config keeps the strategy (its rotation, its counters).
            old = previous.pools.get(name) if previous is not None else None
            same = old is not None and (old.config.strategy, old.config.strategy_options) == (
                pool_config.strategy,
                pool_config.strategy_options,
            )
            strategy = old.strategy if same and old is not None else None
            self.pools[name] = Pool(pool_config, backends, runtime.metrics, strategy=strategy)
        self.router = Router(config.routes, self.pools)
        self.proxies = {
            name: Proxy(pool, runtime.transport, metrics=runtime.metrics)
            for name, pool in self.pools.items()
        }
        # A reload that keeps the cache config keeps the cache (entries, store connection).
        old_cache = previous.cache if previous is not None else None
        self.cache: Cache | None = None
        if config.cache is not None:
            same_cache = old_cache is not None and old_cache.config == config.cache
            self.cache = (
                old_cache
                if same_cache
                else Cache(
                    config.cache,
                    runtime.metrics,
                    store=create_store(config.cache, runtime.redis.get),
                )
            )
        self.rate_limits: RateLimiting = RateLimiting(
            config,
            self.router.all(),
            runtime.metrics,
            previous.rate_limits if previous is not None else None,
            runtime.redis.get,
        )
        self._transport = runtime.transport
        self._metrics = runtime.metrics
        self.mirrors: list[Mirror] = []  # services: their copies stop with the generation
        # WebSocket upgrades take their own chain: the same client filter and rate limit, then
        # the relay.
        self.websocket_handlers: dict[Route, Handler] = {}
        for route in self.router.all():
            route.handler = self._handler(route)
            redirect = route.config.redirect
            relay: Handler = (
                Redirect(redirect)
                if redirect is not None
                else partial(proxy_websocket, pool=self.pools[_pool_of(route)])
            )
            self.websocket_handlers[route] = _guard(route, self.rate_limits.wrap(route, relay))
        self.full_errors = config.server.error_detail == "full"  # read on every request
        self.admin_prefix = config.admin.path_prefix.encode()
        self.metrics_path = config.metrics.path.encode()
        # With the admin API on its own socket (fixed at start: `runtime.admin_listen`), the
        # traffic port answers only the probes itself and proxies the rest of the prefix.
        self.probe_paths: frozenset[bytes] | None = None
        if runtime.admin_listen is not None:
            self.probe_paths = frozenset(self.admin_prefix + p for p in (b"/healthz", b"/readyz"))
        self.admin = build_admin(runtime, self)
        self._client = runtime.client
        self._leader = runtime.leader
        self._shared_health = runtime.shared_health

    def __repr__(self) -> str:
        return f"<Generation {self.config.summary()}>"

    def _handler(self, route: Route) -> Handler:
        """The pipeline of one route: response headers, client filter, body limit, rate limit,
        then cache, then the mirror, then the proxy (or, for a redirect, the redirect);
        compression on either side of the cache (`lb.compress.layer`). The proxy reads the
        route's timeouts and request headers, which are set here too."""
        config = route.config
        handler: Handler
        if config.redirect is not None:
            handler = Redirect(config.redirect)
        else:
            pool_name = _pool_of(route)
            proxy = self.proxies[pool_name]
            if config.timeouts is not None:
                route.timeouts = _over(proxy.timeouts, config.timeouts)
            if config.request_headers is not None:
                route.request_headers = HeaderRules(config.request_headers)
            handler = proxy
            mirror = config.mirror
            if mirror is not None:
                pool = self.pools[mirror.pool]
                handler = Mirror(handler, mirror, pool_name, pool, self._transport, self._metrics)
                self.mirrors.append(handler)
            compression = None
            if config.compress is not None:
                compression = Compression(config.compress, self._metrics)
                handler = Compress(handler, compression)
            if self.cache is not None and config.cache:
                handler = self.cache.layer(handler)
            if compression is not None:
                handler = Negotiate(handler, compression)
        handler = self.rate_limits.wrap(route, handler)
        limit = config.max_body_bytes
        if limit is None:
            limit = self.config.server.max_body_bytes
        if limit is not None:
            handler = BodyLimit(handler, limit)
        handler = _guard(route, handler)
        if config.response_headers is not None:
            handler = ResponseHeaders(handler, HeaderRules(config.response_headers))
        return handler

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
        """Background services this generation needs running (health checks, ...), each once."""
        seen: set[int] = set()
        for service in self._services():
            if id(service) not in seen:  # one Redis client for rate limits and cache: one start
                seen.add(id(service))
                yield service

    def _services(self) -> Iterator[Service]:
        yield from self.mirrors
        yield from self.rate_limits.services()
        if self.cache is not None:
            if isinstance(self.cache.store, RedisStore):
                yield self.cache.store.redis
            yield self.cache
        for pool in self.pools.values():
            config = pool.config
            if config.health_check is not None or config.passive_health is not None:
                yield HealthChecker(
                    pool, self._client, leader=self._leader, shared=self._shared_health
                )


def _over(pool: Timeouts, route: RouteTimeoutConfig) -> Timeouts:
    """The pool's timeouts with a route's `timeouts` over them (SPEC 12); writes follow reads."""
    read = pool.read if route.read is None else route.read
    connect = pool.connect if route.connect is None else route.connect
    return pool._replace(connect=connect, read=read, write=read)


def _pool_of(route: Route) -> str:
    if route.pool is None:  # the config allows it only with `redirect`
        raise AssertionError(f"{route!r} has neither a pool nor a redirect")
    return route.pool


def _guard(route: Route, handler: Handler) -> Handler:
    """`handler` behind the route's allow/deny lists, if it has any: refused clients reach
    nothing else (no rate-limit key, no cache lookup, no backend)."""
    config = route.config
    if config.allow or config.deny:
        return ClientFilter(handler, config.allow, config.deny)
    return handler
