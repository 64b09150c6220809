"""Route matching on host and raw path."""

from __future__ import annotations

from lb.config import RouteConfig
from lb.proxy.routing import Router, request_host


def router(*routes: RouteConfig, pools: tuple[str, ...] = ("a", "b")) -> Router:
    return Router(routes, dict.fromkeys(pools))


def test_first_match_wins_and_prefix_matches_whole_segments() -> None:
    r = router(RouteConfig(pool="a", path_prefix="/api"), RouteConfig(pool="b"))
    assert r.match("", b"/api", {}).pool == "a"  # type: ignore[union-attr]
    assert r.match("", b"/api/x", {}).pool == "a"  # type: ignore[union-attr]
    assert r.match("", b"/apix", {}).pool == "b"  # type: ignore[union-attr]


def test_hosts_exact_and_wildcard() -> None:
    r = router(RouteConfig(pool="a", host="x.com"), RouteConfig(pool="b", host="*.y.com"))
    assert r.match("x.com", b"/", {}).pool == "a"  # type: ignore[union-attr]
    assert r.match("a.y.com", b"/", {}).pool == "b"  # type: ignore[union-attr]
    assert r.match("y.com", b"/", {}) is None
    assert r.match("z.com", b"/", {}) is None


def test_fallback_to_default_or_only_pool() -> None:
    assert router(pools=("default", "b")).match("", b"/", {}).pool == "default"  # type: ignore[union-attr]
    assert router(pools=("only",)).match("", b"/", {}).pool == "only"  # type: ignore[union-attr]
    assert router(pools=("a", "b")).match("", b"/", {}) is None


def test_strip_prefix() -> None:
    r = router(RouteConfig(pool="a", path_prefix="/v1", strip_prefix=True))
    route = r.match("", b"/v1/users", {})
    assert route is not None
    assert route.upstream_path(b"/v1/users?x") == b"/users?x"
    assert route.upstream_path(b"/v1") == b"/"


def test_request_host_lowercases_and_drops_port() -> None:
    assert request_host([(b"host", b"Example.COM:8080")]) == "example.com"
    assert request_host([(b"host", b"[::1]:80")]) == "[::1]"
    assert request_host([]) == ""
