"""Validation of `routes` and of `rate_limit`, which a route may override key by key."""

from __future__ import annotations

import urllib.parse
from collections.abc import Collection, Mapping
from typing import Any, Literal

from lb.config.backends import normalise_host
from lb.config.compress import read_compress
from lb.config.fields import (
    Invalid,
    Problems,
    Section,
    describe,
    item,
    read_networks,
    section_or_flag,
    suggest,
    to_bool,
    to_choice,
    to_int,
    to_number,
    to_size,
    to_str,
    to_url_path,
)
from lb.config.model import DEFAULT_REDIS_URL, MirrorConfig, RateLimitConfig, RouteConfig
from lb.config.pools import TOKEN
from lb.config.traffic import TRAFFIC_KEYS, check_redirect_keys, read_traffic

STORES: tuple[Literal["memory", "redis"], ...] = ("memory", "redis")
_ON_STORE_ERROR: tuple[Literal["allow", "deny"], ...] = ("allow", "deny")
_RATE_LIMIT_KEYS = tuple(RateLimitConfig.__dataclass_fields__)
_ROUTE_KEYS = (
    "host",
    "path_prefix",
    "pool",
    "strip_prefix",
    "rate_limit",
    "cache",
    "compress",
    "max_body_bytes",
    "allow",
    "deny",
    "mirror",
    *TRAFFIC_KEYS,
)


def to_redis_url(value: Any) -> str:
    text = to_str(value)
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("redis", "rediss", "unix"):
        raise Invalid(f"expected a redis://, rediss:// or unix:// URL, got {describe(value)}")
    if parts.scheme == "unix" and not parts.path:
        raise Invalid(f"a unix:// URL needs a socket path, got {describe(value)}")
    return text


def redis_url(section: Section, store: str, environ: Mapping[str, str]) -> str:
    """`redis_url` if given, else `$LB_REDIS_URL`, else the local default."""
    if section.has("redis_url"):
        return section.read("redis_url", DEFAULT_REDIS_URL, to_redis_url)
    from_env = environ.get("LB_REDIS_URL", "")
    if not from_env:
        return DEFAULT_REDIS_URL
    try:
        return to_redis_url(from_env)
    except Invalid as exc:
        # Only a store that will use it makes a bad variable a config problem.
        if store == "redis":
            section.error("redis_url", f"from $LB_REDIS_URL: {exc}")
        return DEFAULT_REDIS_URL


def to_limit_key(value: Any) -> str:
    text = to_str(value)
    if text == "client_ip":
        return text
    kind, sep, name = text.partition(":")
    if kind == "header" and sep and TOKEN.fullmatch(name):
        return f"header:{name.lower()}"  # ASGI header names are lower-case
    raise Invalid(
        f"expected client_ip or header:NAME, got {describe(value)}{suggest(text, ['client_ip'])}"
    )


def read_rate_limit(
    data: Mapping[Any, Any],
    path: str,
    problems: Problems,
    environ: Mapping[str, str],
    base: RateLimitConfig | None = None,
    base_broken: bool = False,
) -> RateLimitConfig | None:
    """A rate limit from `data`; keys it lacks come from `base` (the top-level one) if any.

    `base_broken` says the top-level one was given but invalid: its problems are already reported,
    so a route that relies on it is not told again that `rate` and `burst` are required.
    """
    s = Section(data, path, problems, _RATE_LIMIT_KEYS)
    rate_of = to_number(0, low_exclusive=True)
    if base is not None or base_broken:
        rate = s.read("rate", base.rate if base else None, rate_of)
        burst = s.read("burst", base.burst if base else None, to_int(1))
    else:
        rate = s.require("rate", rate_of)
        burst = s.require("burst", to_int(1))
    d = base or RateLimitConfig(rate=1.0, burst=1)
    store = s.read("store", d.store, to_choice(STORES))
    url = redis_url(s, store, environ) if base is None or s.has("redis_url") else d.redis_url
    on_error = s.read("on_store_error", d.on_store_error, to_choice(_ON_STORE_ERROR))
    key = s.read("key", d.key, to_limit_key)
    max_keys = s.read("max_keys", d.max_keys, to_int(1))
    if rate is None or burst is None:
        return None
    return RateLimitConfig(
        rate=rate,
        burst=burst,
        key=key,
        store=store,
        redis_url=url,
        on_store_error=on_error,
        max_keys=max_keys,
    )


def _split_port(text: str, value: Any) -> tuple[str, str]:
    if text.startswith("["):  # IPv6, maybe with a port after the bracket
        host, bracket, rest = text.partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise Invalid(f"invalid host {describe(value)}")
        return host + bracket, rest[1:]
    if text.count(":") > 1:
        raise Invalid(f"IPv6 host {describe(value)} must be in brackets, e.g. '[::1]'")
    host, _, port = text.partition(":")
    return host, port


def to_route_host(value: Any) -> str:
    """Lower-case, without a port; `*.example.com` matches any subdomain of example.com."""
    host, port = _split_port(to_str(value).strip().lower(), value)
    if port and not port.isdigit():
        raise Invalid(f"invalid port in host {describe(value)}")
    wildcard = host.startswith("*.")
    if "*" in (host[2:] if wildcard else host):
        raise Invalid(
            f"invalid host {describe(value)}: '*' is only allowed as the whole first label, "
            "e.g. '*.example.com'"
        )
    try:
        name = normalise_host(host[2:] if wildcard else host)
    except Invalid:
        raise Invalid(f"invalid host {describe(value)}") from None
    return f"*.{name}" if wildcard else name


def to_path_prefix(value: Any) -> str:
    text = to_url_path(value)
    if "?" in text or "#" in text:
        raise Invalid(f"must not contain '?' or '#', got {describe(value)}")
    # Prefixes match whole segments, so "/v1/" and "/v1" mean the same; keep one spelling.
    return text.rstrip("/") or "/"


def _read_mirror(
    value: Any, path: str, problems: Problems, pool_names: Collection[str]
) -> MirrorConfig | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a mapping with 'pool', got {describe(value)}")
        return None
    s = Section(value, path, problems, tuple(MirrorConfig.__dataclass_fields__))
    pool = s.require("pool", to_str)
    if pool is not None and pool not in pool_names:
        s.error("pool", f"unknown pool {pool!r}{suggest(pool, pool_names)}")
    d = MirrorConfig(pool="")
    percent = s.read("percent", d.percent, to_number(0, 100))
    max_in_flight = s.read("max_in_flight", d.max_in_flight, to_int(1))
    max_body_bytes = s.read("max_body_bytes", d.max_body_bytes, to_size(0))
    if pool is None:
        return None
    return MirrorConfig(pool, percent, max_in_flight, max_body_bytes)


def _read_route(
    value: Any,
    path: str,
    problems: Problems,
    pool_names: Collection[str],
    top_limit: RateLimitConfig | None,
    top_limit_broken: bool,
    environ: Mapping[str, str],
) -> RouteConfig | None:
    if not isinstance(value, Mapping):
        problems.add(path, f"expected a mapping with 'pool', got {describe(value)}")
        return None
    s = Section(value, path, problems, _ROUTE_KEYS)
    traffic = read_traffic(s)
    redirect = s.has("redirect")
    if redirect:
        check_redirect_keys(
            s, ("pool", "strip_prefix", "timeouts", "request_headers", "cache", "mirror")
        )
    pool = None if redirect else s.require("pool", to_str)
    if pool is not None and pool not in pool_names:
        s.error("pool", f"unknown pool {pool!r}{suggest(pool, pool_names)}")
    rate_limit: RateLimitConfig | Literal[False] | None = None
    raw_limit = s.raw("rate_limit")
    if raw_limit is False:
        rate_limit = False
    else:
        data = section_or_flag(raw_limit, s.key_path("rate_limit"), problems, allow_true=False)
        if data is not None:
            rate_limit = read_rate_limit(
                data, s.key_path("rate_limit"), problems, environ, top_limit, top_limit_broken
            )
    if pool is None and traffic["redirect"] is None:
        return None
    return RouteConfig(
        pool=pool,
        host=s.read_optional("host", None, to_route_host),
        path_prefix=s.read("path_prefix", "/", to_path_prefix),
        strip_prefix=s.read("strip_prefix", False, to_bool),
        rate_limit=rate_limit,
        cache=s.read("cache", True, to_bool),
        compress=read_compress(s.raw("compress"), s.key_path("compress"), problems),
        max_body_bytes=s.read_optional("max_body_bytes", None, to_size(0)),
        allow=read_networks(s, "allow", ()),
        deny=read_networks(s, "deny", ()),
        mirror=_read_mirror(s.raw("mirror"), s.key_path("mirror"), problems, pool_names),
        **traffic,
    )


def read_routes(
    value: Any,
    problems: Problems,
    pool_names: Collection[str],
    top_limit: RateLimitConfig | None,
    top_limit_broken: bool,
    environ: Mapping[str, str],
) -> tuple[RouteConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        problems.add("routes", f"expected a list of routes, got {describe(value)}")
        return ()
    routes: list[RouteConfig] = []
    first_at: dict[tuple[str | None, str], int] = {}
    for index, raw in enumerate(value):
        path = item("routes", index)
        before = len(problems.lines)
        route = _read_route(raw, path, problems, pool_names, top_limit, top_limit_broken, environ)
        if route is None:
            continue
        routes.append(route)
        if len(problems.lines) > before:  # defaults stand in for bad values: nothing to compare
            continue
        # First match wins, so a second route with the same host and prefix can never match,
        # unless the first one also asks for methods, headers or cookies (a canary).
        where = (route.host, route.path_prefix)
        if where in first_at:
            problems.add(
                path,
                f"unreachable: routes[{first_at[where]}] has the same host and path_prefix",
            )
        if not route.conditional:
            first_at.setdefault(where, index)
    return tuple(routes)
