"""Routes: which pool serves a request, by host and raw-path prefix. First match wins."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lb.config import RouteConfig
from lb.types import Handler, Receive, Scope, Send


async def _unassigned(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("a route's pipeline is set when its generation is built")


class Route:
    """A compiled route; `handler` is its pipeline (rate limit, cache, proxy), which the
    generation that compiled it sets once (`lb.generation.Generation._handler`)."""

    __slots__ = ("config", "pool", "host", "prefix", "strip_prefix", "handler")

    def __init__(
        self, config: RouteConfig, pool: str, host: str | None, prefix: bytes, strip_prefix: bool
    ) -> None:
        self.config = config
        self.pool = pool
        self.host = host  # exact host, or ".suffix" for "*.suffix"
        self.prefix = prefix  # b"" matches every path
        self.strip_prefix = strip_prefix
        self.handler: Handler = _unassigned

    def __repr__(self) -> str:
        return f"<Route host={self.host} prefix={self.prefix!r} pool={self.pool}>"

    def matches(self, host: str, raw_path: bytes) -> bool:
        if self.host is not None:
            if self.host[0] == ".":
                if not host.endswith(self.host):
                    return False
            elif host != self.host:
                return False
        prefix = self.prefix
        if not prefix:
            return True
        # Whole segments only: /api matches /api, /api/ and /api/x, never /apix.
        return raw_path.startswith(prefix) and (
            len(raw_path) == len(prefix) or raw_path[len(prefix)] in b"/?"
        )

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

    def match(self, host: str, raw_path: bytes) -> Route | None:
        for route in self.routes:
            if route.matches(host, raw_path):
                return route
        return self.fallback


def request_host(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The Host header, lower-cased and without the port (IPv6 literals keep their brackets)."""
    for name, value in headers:
        if name == b"host":
            host = value.decode("latin-1").lower()
            if host.startswith("["):
                return host[: host.find("]") + 1]
            return host.partition(":")[0]
    return ""
