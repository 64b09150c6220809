"""Header rules and redirects filled per request (lb.proxy.rewrite, lb.proxy.redirect), over
fake ASGI scopes: what the templates become, and the Hosts a redirect refuses."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from lb.config import load_config
from lb.config.model import RouteConfig
from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.proxy.redirect import Redirect
from lb.proxy.rewrite import HeaderRules


def route(**keys: Any) -> RouteConfig:
    config = load_config({"pools": {"web": {"backends": ["http://127.0.0.1:9"]}}, "routes": [keys]})
    return config.routes[0]


def request(host: bytes | None, target: bytes = b"/p?q=1", scheme: str = "http") -> dict[str, Any]:
    ctx = RequestContext(b"rid-1", "10.0.0.7", False, "GET", target, None, 0.0)
    ctx.host = host
    return {"type": "http", "scheme": scheme, "headers": [], SCOPE_KEY: ctx}


def test_rules_remove_then_set_then_add_with_placeholders_filled() -> None:
    config = route(
        pool="web",
        response_headers={
            "set": {"X-A": "{client_ip}", "Server": "lb"},
            "add": {"X-B": "{scheme}://{host}/{request_id}", "Set-Cookie": "z=1"},
            "remove": ["X-Gone"],
        },
    )
    assert config.response_headers is not None
    rules = HeaderRules(config.response_headers)
    scope = request(b"Example.COM:8443", scheme="https")
    given = [(b"server", b"up"), (b"x-gone", b"1"), (b"set-cookie", b"a=1"), (b"x-a", b"old")]
    out = rules.apply(given, scope[SCOPE_KEY], scope)
    assert out == [
        (b"set-cookie", b"a=1"),
        (b"x-a", b"10.0.0.7"),
        (b"server", b"lb"),
        (b"x-b", b"https://example.com/rid-1"),
        (b"set-cookie", b"z=1"),
    ]
    assert given[0] == (b"server", b"up")  # the caller's list (a cache entry's) is untouched


def answer(redirect: Redirect, scope: dict[str, Any]) -> list[MutableMapping[str, Any]]:
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        raise AssertionError("a redirect reads no body")

    asyncio.run(redirect(scope, receive, send))
    return sent


def test_redirect_fills_host_and_raw_target() -> None:
    config = route(redirect={"to": "https://{host}{path}", "status": 307})
    assert config.redirect is not None
    start, body = answer(Redirect(config.redirect), request(b"A.example:80", b"/x/%2F?a=b"))
    assert start["status"] == 307
    headers = dict(start["headers"])
    assert headers[b"location"] == b"https://a.example/x/%2F?a=b"
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"content-length"] == str(len(body["body"])).encode()


def test_redirect_refuses_hosts_that_would_choose_the_target() -> None:
    config = route(redirect={"to": "https://{host}{path}"})
    assert config.redirect is not None
    redirect = Redirect(config.redirect)
    for host in (None, b"", b"evil.example/x", b"a@b", b"a b", b"evil.example\\x"):
        start, _ = answer(redirect, request(host))
        assert start["status"] == 400, host
    for host in (b"a.example", b"[::1]:8443", b"10.0.0.1", b"under_score.example"):
        start, _ = answer(redirect, request(host))
        assert start["status"] == 301, host


def test_a_redirect_without_host_needs_none() -> None:
    config = route(redirect={"to": "/new{path}", "status": 308})
    assert config.redirect is not None
    start, _ = answer(Redirect(config.redirect), request(None, b"/old"))
    assert start["status"] == 308
    assert dict(start["headers"])[b"location"] == b"/new/old"
