"""The validated configuration: frozen plain values, no behaviour.

The loader (`lb.config.loader`) is the only place that builds these from YAML; everything else reads
them. Durations are float seconds, sizes are int bytes, networks are `ipaddress` objects.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


Origin = Literal["config", "api", "dns"]


@dataclass(frozen=True)
class BackendConfig:
    url: str  # normalised: scheme://host:port, no trailing slash, no path
    id: str  # default "host:port"
    weight: int = 1  # 0: no new traffic
    # Who made it: the config file, the admin API (POST .../backends) or DNS discovery.
    origin: Origin = "config"


@dataclass(frozen=True)
class DiscoverConfig:
    """A backend entry that stands for the addresses a DNS name resolves to (SPEC section 13):
    `{url: http://web:8000, discover: dns}` or `{srv: _http._tcp.web, discover: srv}`."""

    kind: Literal["dns", "srv"]
    name: str  # the host name (dns) or the SRV name, lower case, no final dot
    port: int = 0  # dns: the URL's port; srv: each record carries its own
    scheme: Literal["http", "https"] = "http"
    weight: int = 1  # of each backend it becomes


@dataclass(frozen=True)
class DiscoveryConfig:
    interval: float = 5.0  # between lookups of each name (sooner when the TTL is shorter)
    resolvers: tuple[str, ...] = ()  # "10.0.0.2", "127.0.0.1:5353", "[::1]:53"; (): the system's
    timeout: float = 2.0  # one lookup, every resolver tried


@dataclass(frozen=True)
class StickyConfig:
    cookie: str = "lb_sticky"
    max_age: float = 3600.0
    # Key for the cookie's HMAC; None: derived from the pool name (stable, but guessable).
    secret: str | None = None


@dataclass(frozen=True)
class HealthCheckConfig:
    path: str = "/health"
    method: str = "GET"
    interval: float = 5.0
    timeout: float = 2.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    # Inclusive ranges; "200-399" -> ((200, 399),), "200,204" -> ((200, 200), (204, 204)).
    expected_status: tuple[tuple[int, int], ...] = ((200, 399),)
    host: str | None = None  # Host header for the check; default: the backend's authority
    jitter: float = 0.1  # fraction of interval, spreads checks of many backends/workers


@dataclass(frozen=True)
class PassiveHealthConfig:
    max_failures: int = 3
    ejection_time: float = 30.0
    max_ejection_percent: float = 50.0


RETRY_ON_NAMES = frozenset({"connect_error", "timeout", "502", "503", "504", "500"})


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = 2  # total tries, first one included
    retry_on: frozenset[str] = frozenset({"connect_error"})
    budget_percent: float = 20.0
    per_try_timeout: float | None = None


@dataclass(frozen=True)
class TimeoutConfig:
    connect: float = 2.0
    read: float = 30.0
    pool: float = 5.0
    total: float | None = None  # whole request, all tries; None: no limit
    # How long an upstream connection may wait in the pool for its next request: below the 5 s
    # after which uvicorn, Node and Apache close idle connections, so lb retires them first.
    idle: float = 4.0


@dataclass(frozen=True)
class PoolTLSConfig:
    """TLS to a pool's `https://` backends (SPEC section 11)."""

    ca_file: str | None = None  # None: the system's CAs
    verify: bool = True
    cert_file: str | None = None  # a client certificate (mTLS), with key_file
    key_file: str | None = None
    server_name: str | None = None  # SNI and the verified name; None: the backend's host


@dataclass(frozen=True)
class PoolLimitsConfig:
    """A pool's circuit breakers (Envoy's), each per backend; None: no limit of that kind."""

    max_connections: int | None = None  # open or opening upstream connections
    max_pending: int | None = None  # requests waiting for a connection; more: 503 at once
    max_requests_per_connection: int | None = None  # then the connection is closed


@dataclass(frozen=True)
class PoolConfig:
    name: str
    backends: tuple[BackendConfig, ...]
    strategy: str = "round_robin"  # registry name or "package.module:ClassName"
    # Strategy-specific knobs, passed to the strategy's constructor as keyword arguments
    # (e.g. least_latency: {decay: 10s}; consistent_hash: {load_factor: 1.25}).
    strategy_options: Mapping[str, object] = field(default_factory=dict)
    hash_key: str = "client_ip"  # client_ip | header:NAME | cookie:NAME | path | query:NAME
    sticky: StickyConfig | None = None
    health_check: HealthCheckConfig | None = None
    passive_health: PassiveHealthConfig | None = None
    retries: RetryConfig = RetryConfig()
    timeouts: TimeoutConfig = TimeoutConfig()
    preserve_host: bool = True
    slow_start: float = 0.0  # seconds over which a recovered backend's weight ramps up; 0: off
    # % of backends usable below which the pool spreads traffic over all of them (panic mode);
    # 0: only when none is usable; None (`panic_threshold: false`): panic mode off, 503 instead.
    panic_threshold: float | None = 0.0
    tls: PoolTLSConfig | None = None  # None: system CAs, verified, the backend's host as SNI
    limits: PoolLimitsConfig | None = None  # None: no circuit breakers
    discover: tuple[DiscoverConfig, ...] = ()  # names resolved to more backends at run time


@dataclass(frozen=True)
class RateLimitConfig:
    rate: float
    burst: int
    key: str = "client_ip"  # client_ip | header:NAME
    store: Literal["memory", "redis"] = "memory"
    redis_url: str = DEFAULT_REDIS_URL  # loader fills from $LB_REDIS_URL when unset
    on_store_error: Literal["allow", "deny"] = "allow"
    max_keys: int = 100_000


@dataclass(frozen=True)
class CacheConfig:
    store: Literal["memory", "redis"] = "memory"
    redis_url: str = DEFAULT_REDIS_URL
    max_entries: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    max_entry_bytes: int = 1024 * 1024
    default_ttl: float = 0.0
    # Targeted cache-control fields (RFC 9213) honoured before Cache-Control, first valid wins;
    # lower-case names.
    targeted_fields: tuple[str, ...] = ("cdn-cache-control",)
    heuristic: bool = False  # RFC 9111 §4.2.2 freshness from Last-Modified
    store_set_cookie: bool = False  # store Set-Cookie responses without public / s-maxage


# Compressible by default: text and the structured text formats (what nginx's gzip_types,
# Traefik's and Caddy's defaults cover between them), not images or archives that are compressed.
DEFAULT_COMPRESS_TYPES = (
    "text/*",
    "application/json",
    "application/javascript",
    "application/x-javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/ld+json",
    "application/manifest+json",
    "application/problem+json",
    "application/graphql-response+json",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
    "font/ttf",
    "font/otf",
)


# RFC 9110 7.6.1 and the legacy Proxy-Connection: never forwarded, never set by a route.
HOP_BY_HOP_FIELDS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True)
class CompressConfig:
    # Traefik's default (nginx: 20 bytes, Caddy: 512): below ~1 KB the coding's own framing and a
    # TCP segment make the saving nil. Applies when the response says its length.
    min_bytes: int = 1024
    # Media types (lower case, no parameters): exact, or "type/*" for a whole top-level type.
    types: tuple[str, ...] = DEFAULT_COMPRESS_TYPES
    # What lb may encode with, preferred first when the client weighs several alike.
    encodings: tuple[Literal["zstd", "br", "gzip"], ...] = ("zstd", "br", "gzip")


@dataclass(frozen=True)
class Template:
    """A header value or redirect target with `{placeholder}`s, split once at load: `parts`
    alternates literal text and placeholder names, starting and ending with text (maybe empty)."""

    text: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class HeaderRulesConfig:
    """A route's `request_headers` or `response_headers`: applied remove, then set, then add.
    Names are lower-case."""

    set: tuple[tuple[str, Template], ...] = ()
    add: tuple[tuple[str, Template], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class RedirectConfig:
    to: Template  # placeholders: host, path, scheme
    status: int = 301


@dataclass(frozen=True)
class RouteTimeoutConfig:
    """A route's `timeouts`: None keeps the pool's."""

    connect: float | None = None
    read: float | None = None


@dataclass(frozen=True)
class ValueMatch:
    """A header or cookie value a route requires: `exact`, or `pattern` searched (`~REGEX`)."""

    exact: str | None = None
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True)
class MirrorConfig:
    """A route's shadow traffic: copies of `percent` of its requests to `pool`."""

    pool: str
    percent: float = 100.0
    max_in_flight: int = 64  # copies under way at once, per route; more are dropped
    max_body_bytes: int = 64 * 1024  # a request with a longer body is not mirrored


@dataclass(frozen=True)
class RouteConfig:
    pool: str | None = None  # None only with `redirect`: answered without a backend
    host: str | None = None  # lower-case, no port; "*.example.com" matches any subdomain
    path_prefix: str = "/"
    strip_prefix: bool = False
    # None: inherit the top-level setting; False: off on this route; a config: this route's own.
    rate_limit: RateLimitConfig | Literal[False] | None = None
    cache: bool = True  # False: the cache layer is bypassed on this route
    compress: CompressConfig | None = None  # None: responses pass as the backend sent them
    max_body_bytes: int | None = None  # None: server.max_body_bytes applies
    # Client IPs: refused when in `deny`, or when `allow` is not empty and they are not in it.
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    mirror: MirrorConfig | None = None  # shadow copies of this route's requests
    timeouts: RouteTimeoutConfig | None = None
    request_headers: HeaderRulesConfig | None = None
    response_headers: HeaderRulesConfig | None = None
    redirect: RedirectConfig | None = None
    # Matching beyond host and path; empty: any. Header names lower-case, methods upper-case.
    methods: frozenset[str] = frozenset()
    headers: tuple[tuple[str, ValueMatch], ...] = ()
    cookies: tuple[tuple[str, ValueMatch], ...] = ()

    @property
    def conditional(self) -> bool:
        """Whether the route matches on more than host and path (so it shadows no later one)."""
        return bool(self.methods or self.headers or self.cookies)


@dataclass(frozen=True)
class AdminConfig:
    path_prefix: str = "/_lb"
    token: str | None = None
    allow: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    # (host, port) of the admin API's own socket; None: it is served on the traffic port.
    listen: tuple[str, int] | None = None


@dataclass(frozen=True)
class MetricsConfig:
    path: str = "/_lb/metrics"


@dataclass(frozen=True)
class LoggingConfig:
    access_log: bool = True
    format: Literal["json", "text"] = "json"
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    file: str | None = None  # access log destination; None: stdout
    error_file: str | None = None  # lb's, uvicorn's and gunicorn's log lines; None: stderr


@dataclass(frozen=True)
class ServerTLSConfig:
    """TLS termination on the listening port (SPEC section 11)."""

    cert_file: str
    key_file: str | None = None  # None: the key is in cert_file
    client_ca_file: str | None = None  # set: client certificates are required and verified


@dataclass(frozen=True)
class ServerConfig:
    graceful_timeout: float = 30.0  # in-flight requests get this long after SIGTERM
    max_header_bytes: int = 32 * 1024  # over: 431
    max_target_bytes: int = 8 * 1024  # over: 414
    keepalive_timeout: float = 5.0
    header_timeout: float = 10.0  # a request's head must arrive within this (slowloris): 408
    send_timeout: float = 60.0  # a client that takes no response bytes for this long is dropped
    watch_config: bool = False  # reload when the config file changes
    max_body_bytes: int | None = None  # request bodies larger than this get 413; None: no limit
    tls: ServerTLSConfig | None = None
    proxy_protocol: bool = False  # a PROXY v1/v2 header from trusted_proxies opens every connection
    # What an error lb makes says in its body: a fixed sentence per code, or the cause (which
    # names backends, addresses and exceptions: for debugging only).
    error_detail: Literal["minimal", "full"] = "minimal"


@dataclass(frozen=True)
class Config:
    pools: Mapping[str, PoolConfig]
    routes: tuple[RouteConfig, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    rate_limit: RateLimitConfig | None = None
    cache: CacheConfig | None = None
    admin: AdminConfig = AdminConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    server: ServerConfig = ServerConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    source: str | None = None  # path the config was read from, for reload

    def summary(self) -> str:
        backends = sum(len(p.backends) for p in self.pools.values())
        names = sum(len(p.discover) for p in self.pools.values())
        discovered = f" + {names} discovered name(s)" if names else ""
        features = [n for n in ("rate_limit", "cache") if getattr(self, n) is not None]
        extra = f", {', '.join(features)} on" if features else ""
        return (
            f"{len(self.pools)} pool(s), {backends} backend(s){discovered}, "
            f"{len(self.routes)} route(s){extra}"
        )
