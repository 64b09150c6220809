"""The order of store writes and client messages in `Tee`, without sockets: a response without a
body is complete for the client with its head, so what it changes in the store must be written
before that head goes out (SPEC 7: an entry is stored before the next request for it can arrive).
The store here yields to the event loop on every write, as the redis store does."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from lb.cache.cache import Cache
from lb.cache.entry import Entry
from lb.cache.fetch import Tee
from lb.cache.request import cache_request
from lb.cache.store import MemoryStore
from lb.config import CacheConfig
from lb.metrics import Metrics

NOW = 1_700_000_000.0


class SlowStore(MemoryStore):
    """A memory store whose writes take a turn of the event loop and are logged."""

    def __init__(self, events: list[str]) -> None:
        super().__init__(100, 2**20)
        self.events = events

    async def put(self, entry: Entry, now: float) -> None:
        await asyncio.sleep(0)
        self.events.append(f"put {entry.primary.split(b' ')[0].decode()}")
        await super().put(entry, now)

    async def invalidate(self, primaries: Sequence[bytes]) -> None:
        await asyncio.sleep(0)
        self.events.append("invalidate")
        await super().invalidate(primaries)


def setup(method: str, *request_headers: tuple[bytes, bytes]) -> tuple[Cache, Any, list[str]]:
    events: list[str] = []
    cache = Cache(CacheConfig(), Metrics(), store=SlowStore(events), clock=lambda: NOW)
    scope = {"headers": [(b"host", b"h"), *request_headers], "scheme": "http"}
    request = cache_request(scope, method, b"/a")
    assert request is not None

    async def send(message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            events.append(f"start {message['status']}")
        elif kind == "http.response.body":
            events.append("body")
        else:
            events.append(kind)

    return cache, (request, send), events


async def respond(tee: Tee, status: int, headers: list[tuple[bytes, bytes]], *parts: bytes) -> None:
    await tee({"type": "http.response.start", "status": status, "headers": headers})
    for i, part in enumerate(parts):
        await tee({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})


FRESH = [(b"cache-control", b"max-age=60"), (b"content-length", b"10")]


async def test_a_head_response_is_stored_before_its_head_goes_out() -> None:
    cache, (request, send), events = setup("HEAD")
    tee = Tee(cache, request, send, stale=None, request_time=NOW)
    await respond(tee, 200, FRESH, b"")
    assert events == ["put HEAD", "start 200", "body"]


async def test_an_interim_response_is_relayed_and_never_stored() -> None:
    # The transport relays 1xx outside ASGI; a message of another kind that came through anyway
    # goes on untouched, and only the final response is stored.
    cache, (request, send), events = setup("GET")
    tee = Tee(cache, request, send, stale=None, request_time=NOW)
    await tee({"type": "http.response.informational", "status": 103, "headers": []})
    await respond(tee, 200, FRESH, b"0123456789")
    assert events == ["http.response.informational", "start 200", "put GET", "body"]
    (entry,) = await cache.store.variants(request.primary, NOW)
    assert entry.status == 200


async def test_a_204_is_stored_before_its_head_goes_out() -> None:
    cache, (request, send), events = setup("GET")
    tee = Tee(cache, request, send, stale=None, request_time=NOW)
    await respond(tee, 204, [(b"cache-control", b"max-age=60")], b"")
    assert events == ["put GET", "start 204", "body"]


async def test_a_304_for_the_clients_condition_waits_for_the_stored_body() -> None:
    cache, (request, send), events = setup("GET", (b"if-none-match", b'"v"'))
    tee = Tee(cache, request, send, stale=None, request_time=NOW)
    await respond(tee, 200, [*FRESH, (b"etag", b'"v"')], b"01234", b"56789")
    assert events == ["put GET", "start 304", "body"]
    assert tee.answered_304


async def test_a_head_freshens_the_stored_get_before_its_head_goes_out() -> None:
    cache, (request, send), events = setup("HEAD")
    stored = Entry(
        b"GET http://h/a",
        200,
        [(b"cache-control", b"max-age=1"), (b"content-length", b"10")],
        b"0123456789",
        response_time=NOW - 100,
        initial_age=0.0,
        lifetime=1.0,
        vary=(),
        secondary=b"",
    )
    tee = Tee(cache, request, send, stale=stored, request_time=NOW)
    await respond(tee, 200, [(b"cache-control", b"max-age=600"), (b"content-length", b"10")], b"")
    assert events[-3:] == ["put GET", "start 200", "body"]
    assert tee.freshened is not None and tee.freshened.lifetime == 600.0
    # Another length: the stored GET is outdated, and gone before the head goes out.
    events.clear()
    tee = Tee(cache, request, send, stale=stored, request_time=NOW)
    await respond(tee, 200, [(b"cache-control", b"max-age=600"), (b"content-length", b"3")], b"")
    assert events[-3:] == ["invalidate", "start 200", "body"]
