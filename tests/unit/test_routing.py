"""Route matching on host and raw path, then methods, headers and cookies (SPEC 12)."""

from __future__ import annotations

import re

from lb.config import RouteConfig
from lb.config.model import ValueMatch
from lb.proxy.routing import Router, cookie_values, request_host


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


def scope(method: str = "GET", *headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "method": method, "headers": list(headers)}


def canary_router(**match: object) -> Router:
    return router(RouteConfig(pool="a", **match), RouteConfig(pool="b"))  # type: ignore[arg-type]


def pool_for(r: Router, request: dict[str, object], path: bytes = b"/") -> str | None:
    route = r.match("", path, request)
    return None if route is None else route.pool


def test_methods_headers_and_cookies_choose_the_canary_route() -> None:
    by_method = canary_router(methods=frozenset({"PUT", "DELETE"}))
    assert pool_for(by_method, scope("DELETE")) == "a"
    assert pool_for(by_method, scope("GET")) == "b"
    by_header = canary_router(headers=(("x-canary", ValueMatch(exact="1")),))
    assert pool_for(by_header, scope("GET", (b"x-canary", b"1"))) == "a"
    assert pool_for(by_header, scope("GET", (b"x-canary", b"10"))) == "b"
    assert pool_for(by_header, scope("GET", (b"x-other", b"1"))) == "b"
    # Any field of the name may match.
    assert pool_for(by_header, scope("GET", (b"x-canary", b"0"), (b"x-canary", b"1"))) == "a"
    by_cookie = canary_router(cookies=(("tier", ValueMatch(exact="beta")),))
    assert pool_for(by_cookie, scope("GET", (b"cookie", b"a=1; tier=beta"))) == "a"
    assert pool_for(by_cookie, scope("GET", (b"cookie", b"a=1"), (b"cookie", b"tier=beta"))) == "a"
    assert pool_for(by_cookie, scope("GET", (b"cookie", b"xtier=beta; tier=b"))) == "b"
    assert pool_for(by_cookie, scope("GET", (b"x-tier", b"beta"))) == "b"


def test_a_regex_is_searched_and_every_condition_must_hold() -> None:
    r = canary_router(
        methods=frozenset({"GET"}),
        headers=(("user-agent", ValueMatch(pattern=re.compile(r"beta/\d+"))),),
        cookies=(("id", ValueMatch(pattern=re.compile(r"^[0-4]"))),),
        path_prefix="/api",
    )
    ok = scope("GET", (b"user-agent", b"app beta/3"), (b"cookie", b"id=42"))
    assert pool_for(r, ok, b"/api/x") == "a"
    assert pool_for(r, ok, b"/other") == "b"
    assert pool_for(r, {**ok, "method": "POST"}, b"/api") == "b"
    assert (
        pool_for(r, scope("GET", (b"user-agent", b"beta/3"), (b"cookie", b"id=9")), b"/api") == "b"
    )
    assert (
        pool_for(r, scope("GET", (b"user-agent", b"alpha"), (b"cookie", b"id=1")), b"/api") == "b"
    )


def test_routes_without_conditions_carry_none() -> None:
    r = router(
        RouteConfig(pool="a", path_prefix="/x"), RouteConfig(pool="b", methods=frozenset({"GET"}))
    )
    assert r.routes[0].conditions is None
    assert r.routes[1].conditions is not None


def test_cookie_values() -> None:
    assert cookie_values([b'a=1; b="two"; a=3', b"c=4"], b"a") == [b"1", b"3"]
    assert cookie_values([b"a=1; b"], b"b") == []
