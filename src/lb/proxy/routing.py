"""Routes: which pool serves a request, by host and raw-path prefix, then the route's methods,
headers and cookies when it asks for them (SPEC 12). First match wins."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from lb.config import RouteConfig
from lb.config.model import ValueMatch
from lb.types import Handler, Receive, Scope, Send

if TYPE_CHECKING:
    from lb.proxy.rewrite import HeaderRules
    from lb.transport import Timeouts


async def _unassigned(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("a route's pipeline is set when its generation is built")


class Route:
    """A compiled route; `handler` is its pipeline (rate limit, cache, proxy or redirect), which
    the generation that compiled it sets once (`lb.generation.Generation._handler`)."""

    __slots__ = (
        "config",
        "pool",
        "host",
        "prefix",
        "strip_prefix",
        "handler",
        "conditions",
        "timeouts",
        "request_headers",
    )

    def __init__(
        self,
        config: RouteConfig,
        pool: str | None,
        host: str | None,
        prefix: bytes,
        strip_prefix: bool,
    ) -> None:
        self.config = config
        self.pool = pool  # None: a redirect, answered without a backend
        self.host = host  # exact host, or ".suffix" for "*.suffix"
        self.prefix = prefix  # b"" matches every path
        self.strip_prefix = strip_prefix
        self.handler: Handler = _unassigned
        self.conditions = Conditions.of(config)  # None: host and path decide
        # Set by the generation with the pipeline, read by the pool's proxy: the pool's timeouts
        # with the route's over them (None: the pool's own), the route's request header rules.
        self.timeouts: Timeouts | None = None
        self.request_headers: HeaderRules | None = None

    def __repr__(self) -> str:
        return f"<Route host={self.host} prefix={self.prefix!r} pool={self.pool}>"

    def matches(self, host: str, raw_path: bytes, scope: Scope) -> bool:
        if self.host is not None:
            if self.host[0] == ".":
                if not host.endswith(self.host):
                    return False
            elif host != self.host:
                return False
        prefix = self.prefix
        # Whole segments only: /api matches /api, /api/ and /api/x, never /apix.
        if prefix and not (
            raw_path.startswith(prefix)
            and (len(raw_path) == len(prefix) or raw_path[len(prefix)] in b"/?")
        ):
            return False
        return self.conditions is None or self.conditions.matches(scope)

    def upstream_path(self, raw_path: bytes) -> bytes:
        if self.strip_prefix and self.prefix:
            stripped = raw_path[len(self.prefix) :]
            return stripped if stripped.startswith(b"/") else b"/" + stripped
        return raw_path


def _compile(config: RouteConfig) -> Route:
    host = config.host
    if host is not None and host.startswith("*."):
        host = host[1:]
    prefix = b"" if config.path_prefix == "/" else config.path_prefix.encode("latin-1")
    return Route(config, config.pool, host, prefix, config.strip_prefix)


class Router:
    def __init__(self, routes: Sequence[RouteConfig], pools: Mapping[str, object]) -> None:
        self.routes = tuple(_compile(r) for r in routes)
        self.by_host = any(r.host is not None for r in self.routes)  # else the Host never matters
        default = (
            "default" if "default" in pools else (next(iter(pools)) if len(pools) == 1 else None)
        )
        self.fallback = None if default is None else _compile(RouteConfig(pool=default))

    def all(self) -> tuple[Route, ...]:
        return self.routes if self.fallback is None else (*self.routes, self.fallback)

    def match(self, host: str, raw_path: bytes, scope: Scope) -> Route | None:
        for route in self.routes:
            if route.matches(host, raw_path, scope):
                return route
        return self.fallback


# (name, exact value, or the pattern searched in the value), names and values as ASGI bytes.
Match = tuple[bytes, bytes | None, re.Pattern[str] | None]


def _compile_match(name: str, match: ValueMatch) -> Match:
    exact = match.exact.encode("latin-1") if match.exact is not None else None
    return name.encode("latin-1"), exact, match.pattern


def _value_matches(exact: bytes | None, pattern: re.Pattern[str] | None, value: bytes) -> bool:
    if pattern is not None:
        return pattern.search(value.decode("latin-1")) is not None
    return value == exact


class Conditions:
    """A route's `methods`, `headers` and `cookies`, all of which must hold. Only routes that
    have them carry one, so the others pay one attribute test per request."""

    __slots__ = ("methods", "headers", "cookies")

    def __init__(
        self,
        methods: frozenset[str],
        headers: tuple[Match, ...],
        cookies: tuple[Match, ...],
    ) -> None:
        self.methods = methods
        self.headers = headers
        self.cookies = cookies

    @classmethod
    def of(cls, config: RouteConfig) -> Conditions | None:
        """The route's conditions, or None when it has none."""
        if not config.conditional:
            return None
        return cls(
            config.methods,
            tuple(_compile_match(name, m) for name, m in config.headers),
            tuple(_compile_match(name, m) for name, m in config.cookies),
        )

    def matches(self, scope: Scope) -> bool:
        if self.methods and scope.get("method", "GET") not in self.methods:
            return False
        headers = scope["headers"]
        for name, exact, pattern in self.headers:
            # Any of the header's fields may match: `X-Canary` sent twice is still a canary.
            if not any(n == name and _value_matches(exact, pattern, v) for n, v in headers):
                return False
        if self.cookies:
            jar = [v for n, v in headers if n == b"cookie"]
            for name, exact, pattern in self.cookies:
                if not any(_value_matches(exact, pattern, v) for v in cookie_values(jar, name)):
                    return False
        return True


def cookie_values(fields: Sequence[bytes], name: bytes) -> list[bytes]:
    """Every value of cookie `name` in the Cookie fields (`a=1; b=2`, RFC 6265 5.4)."""
    out = []
    for field in fields:
        for pair in field.split(b";"):
            key, sep, value = pair.strip().partition(b"=")
            if sep and key == name:
                out.append(value.strip().strip(b'"'))
    return out


def request_host(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The Host header, lower-cased and without the port (IPv6 literals keep their brackets)."""
    for name, value in headers:
        if name == b"host":
            host = value.decode("latin-1").lower()
            if host.startswith("["):
                return host[: host.find("]") + 1]
            return host.partition(":")[0]
    return ""
