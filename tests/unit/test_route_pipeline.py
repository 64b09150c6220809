"""What a generation assembles for a route with SPEC 12 keys: timeouts over the pool's, compiled
header rules, the redirect in place of cache and proxy, response rules outermost."""

from __future__ import annotations

from lb.app import LoadBalancer
from lb.proxy.access import ClientFilter
from lb.proxy.handler import Proxy
from lb.proxy.redirect import Redirect
from lb.proxy.rewrite import ResponseHeaders
from lb.transport import Timeouts


def build() -> LoadBalancer:
    return LoadBalancer(
        {
            "pools": {
                "web": {
                    "backends": ["http://127.0.0.1:9001"],
                    "timeouts": {"connect": 2, "read": 30, "pool": 5, "idle": 4},
                }
            },
            "routes": [
                {"path_prefix": "/slow", "pool": "web", "timeouts": {"read": "2m"}},
                {"path_prefix": "/fast", "pool": "web", "timeouts": {"connect": "100ms"}},
                {
                    "path_prefix": "/h",
                    "pool": "web",
                    "request_headers": {"set": {"X-A": "1"}},
                    "response_headers": {"remove": ["Server"]},
                    "deny": ["10.0.0.0/8"],
                },
                {"path_prefix": "/r", "redirect": {"to": "/x"}},
                {"pool": "web"},
            ],
            "logging": {"access_log": False},
        }
    )


def test_route_timeouts_lie_over_the_pools() -> None:
    slow, fast, headers, redirect, plain = build().generation.router.routes
    assert slow.timeouts == Timeouts(2.0, 120.0, 120.0, 5.0, 4.0)
    assert fast.timeouts == Timeouts(0.1, 30.0, 30.0, 5.0, 4.0)
    assert headers.timeouts is None and plain.timeouts is None


def test_header_rules_and_redirect_are_in_the_pipeline() -> None:
    gen = build().generation
    slow, fast, headers, redirect, plain = gen.router.routes
    assert headers.request_headers is not None and plain.request_headers is None
    assert isinstance(headers.handler, ResponseHeaders)
    assert isinstance(headers.handler.app, ClientFilter)  # the rules wrap lb's own 403 too
    assert isinstance(redirect.handler, Redirect)
    assert redirect.pool is None
    assert isinstance(gen.websocket_handlers[redirect], Redirect)
    assert isinstance(plain.handler, Proxy)
