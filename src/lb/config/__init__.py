"""lb's configuration: the frozen data model and the loader that validates YAML into it.

`load_config(path_or_mapping)` returns a `Config` or raises `ConfigError`, whose `problems` list
every mistake as `key.path: message`.
"""

from lb.config.fields import ConfigError
from lb.config.loader import default_config_path, load_config
from lb.config.model import (
    DEFAULT_REDIS_URL,
    RETRY_ON_NAMES,
    AdminConfig,
    BackendConfig,
    CacheConfig,
    Config,
    DiscoverConfig,
    DiscoveryConfig,
    HealthCheckConfig,
    LoggingConfig,
    MetricsConfig,
    MirrorConfig,
    Network,
    Origin,
    PassiveHealthConfig,
    PoolConfig,
    PoolLimitsConfig,
    PoolTLSConfig,
    RateLimitConfig,
    RetryConfig,
    RouteConfig,
    ServerConfig,
    ServerTLSConfig,
    StickyConfig,
    TimeoutConfig,
)
from lb.config.units import parse_duration, parse_size

__all__ = [
    "DEFAULT_REDIS_URL",
    "RETRY_ON_NAMES",
    "AdminConfig",
    "BackendConfig",
    "CacheConfig",
    "Config",
    "ConfigError",
    "DiscoverConfig",
    "DiscoveryConfig",
    "HealthCheckConfig",
    "LoggingConfig",
    "MetricsConfig",
    "Network",
    "Origin",
    "PassiveHealthConfig",
    "MirrorConfig",
    "PoolConfig",
    "PoolLimitsConfig",
    "PoolTLSConfig",
    "RateLimitConfig",
    "RetryConfig",
    "RouteConfig",
    "ServerConfig",
    "ServerTLSConfig",
    "StickyConfig",
    "TimeoutConfig",
    "default_config_path",
    "load_config",
    "parse_duration",
    "parse_size",
]
