"""The rate-limit ASGI layer driven directly: no sockets, a fake clock, a recording inner app."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lb.config import RateLimitConfig
from lb.metrics import Metrics
from lb.proxy.context import SCOPE_KEY, RequestContext
from lb.ratelimit.gcra import Decision, Limit
from lb.ratelimit.memory import MemoryStore
from lb.ratelimit.middleware import MAX_KEY_CHARS, RateLimit, key_function
from lb.ratelimit.store import StoreUnavailable


class Clock:
    now = 500.0

    def __call__(self) -> float:
        return self.now


class RecordingMetrics(Metrics):
    def __init__(self) -> None:
        self.decisions: list[bool] = []
        self.store_errors: list[str] = []

    def rate_limit(self, allowed: bool) -> None:
        self.decisions.append(allowed)

    def store_error(self, store: str) -> None:
        self.store_errors.append(store)


class Inner:
    """The rest of the chain: answers 200 with its own RateLimit header, as a backend might."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"2"), (b"RateLimit-Remaining", b"999")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})


class BrokenStore:
    limit = Limit(1, 1)

    async def decide(self, key: str) -> Decision:
        raise StoreUnavailable("redis: connection refused")


def make_scope(kind: str = "http", ip: str = "10.0.0.1", headers: Any = (), **extra: Any) -> Any:
    ctx = RequestContext(b"req-1", ip, False, "GET", b"/", None, 0.0)
    return {"type": kind, "headers": list(headers), SCOPE_KEY: ctx, **extra}


async def call(app: Any, scope: Any) -> tuple[list[Any], int]:
    sent: list[Any] = []
    received = 0

    async def receive() -> Any:
        nonlocal received
        received += 1
        if scope["type"] == "websocket":
            return {"type": "websocket.connect"}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent, received


def head(sent: list[Any]) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in sent[0]["headers"]}


def layer(rate: float = 1, burst: int = 2, **config: Any) -> tuple[RateLimit, Inner, Any]:
    settings = RateLimitConfig(rate=rate, burst=burst, **config)
    clock = Clock()
    inner = Inner()
    metrics = RecordingMetrics()
    store = MemoryStore(Limit.of(settings), settings.max_keys, clock=clock)
    return RateLimit(inner, store, settings, metrics), inner, metrics


async def test_allowed_responses_carry_the_rate_limit_headers() -> None:
    app, inner, metrics = layer(rate=1, burst=2)
    sent, _ = await call(app, make_scope())
    assert inner.calls == 1
    assert sent[0]["status"] == 200
    headers = head(sent)
    assert headers[b"ratelimit-limit"] == b"2"
    assert headers[b"ratelimit-remaining"] == b"1"
    assert headers[b"ratelimit-reset"] == b"1"
    # The backend's own RateLimit-Remaining is replaced by the balancer's, not doubled.
    assert [k for k, _ in sent[0]["headers"]].count(b"ratelimit-remaining") == 1
    assert metrics.decisions == [True]


async def test_a_rejected_request_gets_429_and_is_never_read_or_forwarded() -> None:
    app, inner, metrics = layer(rate=0.5, burst=1)
    await call(app, make_scope())
    sent, received = await call(app, make_scope())
    assert inner.calls == 1
    assert received == 0  # the body was never read
    assert sent[0]["status"] == 429
    headers = head(sent)
    assert headers[b"retry-after"] == b"2"
    assert headers[b"ratelimit-limit"] == b"1"
    assert headers[b"ratelimit-remaining"] == b"0"
    assert headers[b"ratelimit-reset"] == b"2"
    assert headers[b"content-type"] == b"application/json"
    body = json.loads(sent[1]["body"])
    assert body["error"] == "rate_limited" and body["request_id"] == "req-1"
    assert metrics.decisions == [True, False]


async def test_clients_are_limited_apart() -> None:
    app, inner, _ = layer(rate=1, burst=1)
    assert (await call(app, make_scope(ip="10.0.0.1")))[0][0]["status"] == 200
    assert (await call(app, make_scope(ip="10.0.0.2")))[0][0]["status"] == 200
    assert (await call(app, make_scope(ip="10.0.0.1")))[0][0]["status"] == 429


@pytest.mark.parametrize("on_error", ["allow", "deny"])
async def test_a_store_that_cannot_decide_follows_on_store_error(on_error: str) -> None:
    settings = RateLimitConfig(rate=1, burst=1, on_store_error=on_error)  # type: ignore[arg-type]
    inner = Inner()
    metrics = RecordingMetrics()
    app = RateLimit(inner, BrokenStore(), settings, metrics)
    sent, received = await call(app, make_scope())
    assert metrics.store_errors == ["ratelimit"]
    assert metrics.decisions == []
    if on_error == "allow":
        assert inner.calls == 1 and sent[0]["status"] == 200
        assert b"ratelimit-limit" not in head(sent)  # no decision, nothing to tell
    else:
        assert inner.calls == 0 and received == 0
        assert sent[0]["status"] == 503
        assert head(sent)[b"retry-after"] == b"1"
        assert json.loads(sent[1]["body"])["error"] == "unavailable"


async def test_a_limited_websocket_upgrade_is_refused_with_429() -> None:
    app, inner, _ = layer(rate=1, burst=1)
    extensions = {"websocket.http.response": {}}
    sent, _ = await call(app, make_scope("websocket", extensions=extensions))
    assert inner.calls == 1
    assert sent[0]["type"] == "websocket.accept"
    assert head(sent)[b"ratelimit-remaining"] == b"0"
    sent, _ = await call(app, make_scope("websocket", extensions=extensions))
    assert inner.calls == 1
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 429
    assert head(sent)[b"retry-after"] == b"1"
    assert json.loads(sent[1]["body"])["error"] == "rate_limited"


async def test_without_the_response_extension_a_limited_upgrade_is_closed() -> None:
    app, inner, _ = layer(rate=1, burst=1)
    await call(app, make_scope("websocket"))
    sent, _ = await call(app, make_scope("websocket"))
    assert sent == [{"type": "websocket.close", "code": 1013}]
    assert inner.calls == 1


def test_keys_by_client_ip() -> None:
    key_of = key_function("client_ip")
    scope = make_scope(ip="192.0.2.7")
    assert key_of(scope, scope[SCOPE_KEY]) == "192.0.2.7"


def test_keys_by_header_fall_back_to_the_client_ip() -> None:
    key_of = key_function("header:x-api-key")

    def key(headers: Any) -> str:
        scope = make_scope(ip="192.0.2.7", headers=headers)
        return key_of(scope, scope[SCOPE_KEY])

    assert key([(b"x-api-key", b"alpha"), (b"x-api-key", b"beta")]) == "h:alpha"
    assert key([]) == "ip:192.0.2.7"
    assert key([(b"x-api-key", b"")]) == "ip:192.0.2.7"
    # A header value equal to an IP is not that IP's bucket.
    assert key([(b"x-api-key", b"192.0.2.7")]) != key([])
    long = key([(b"x-api-key", b"k" * 10_000)])
    assert long.startswith("h#") and len(long) <= MAX_KEY_CHARS + 2
    assert long != key([(b"x-api-key", b"k" * 10_001)])
    with pytest.raises(ValueError):
        key_function("cookie:session")
