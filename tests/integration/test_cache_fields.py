"""SPEC section 7's reading of caching fields, through a real balancer and a real backend: Age,
HTTP-dates, CDN-Cache-Control, heuristic freshness, Set-Cookie, Range, HEAD, max-stale, no-store,
ETags and the revalidation path's 304s. Each case also runs on the redis store, which must behave
the same. Staleness needs no waiting: a backend `Age` larger than `max-age` makes a response stale
on arrival.
"""

from __future__ import annotations

import json
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps import cache_url
from conftest import pool_config
from rawbackend import answer_each
from servers import wait_until


@pytest.fixture(params=["memory", "redis"])
def lb_cache(request, cached):  # type: ignore[no-untyped-def]
    """`cached`, on the memory store and on a redis store of its own."""
    if request.param == "memory":
        return cached
    server = request.getfixturevalue("redis_server")

    def factory(**cache: Any):  # type: ignore[no-untyped-def]
        return cached(store="redis", redis_url=server.url, **cache)

    return factory


def results(client: httpx.Client, target: str, n: int = 2, **kw: Any) -> list[str]:
    return [client.get(target, **kw).headers["x-cache"] for _ in range(n)]


def test_the_first_age_value_counts(lb_cache) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = lb_cache()
    old_first = cache_url("age1", "cache-control: max-age=3600", "age: 7200, 0")
    assert results(client, old_first) == ["MISS", "MISS"]  # stale on arrival
    young_first = cache_url("age2", "cache-control: max-age=3600", "age: 0, 7200")
    assert results(client, young_first) == ["MISS", "HIT"]


@pytest.mark.parametrize(
    "expires",
    [
        "Thu, 18 Aug 2050 02:01:18 UTC",
        "Thu, 18 Aug 50 02:01:18 GMT",
        "Thu 18 Aug 2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 2:01:18 GMT",
    ],
)
def test_an_expires_that_is_no_http_date_means_expired(lb_cache, expires: str) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = lb_cache()
    assert results(client, cache_url("exp", "expires: " + expires)) == ["MISS", "MISS"]
    valid = cache_url("exp-ok", "expires: Thu, 18 Aug 2050 02:01:18 GMT")
    assert results(client, valid) == ["MISS", "HIT"]


def test_cdn_cache_control_takes_precedence(lb_cache) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = lb_cache()
    cdn_only = cache_url("cdn1", "cache-control: no-store", "cdn-cache-control: max-age=60")
    assert results(client, cdn_only) == ["MISS", "HIT"]
    cdn_no_store = cache_url("cdn2", "cache-control: max-age=60", "cdn-cache-control: no-store")
    assert results(client, cdn_no_store) == ["MISS", "MISS"]
    invalid = cache_url("cdn3", "cache-control: no-store", 'cdn-cache-control: max-age="60"')
    assert results(client, invalid) == ["MISS", "MISS"]  # an invalid field is ignored


def test_targeted_fields_is_configurable(lb_cache) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = lb_cache(targeted_fields=["LB-Cache-Control", "CDN-Cache-Control"])
    ours = cache_url(
        "t1",
        "cache-control: no-store",
        "cdn-cache-control: no-store",
        "lb-cache-control: max-age=9",
    )
    assert results(client, ours) == ["MISS", "HIT"]
    _, plain, _ = lb_cache(targeted_fields=[])
    cdn = cache_url("t2", "cache-control: no-store", "cdn-cache-control: max-age=60")
    assert results(plain, cdn) == ["MISS", "MISS"]


def test_heuristic_freshness_only_when_switched_on(lb_cache) -> None:  # type: ignore[no-untyped-def]
    last_modified = "last-modified: " + formatdate(0, usegmt=True)
    backend, client, _ = lb_cache()
    assert results(client, cache_url("h1", last_modified)) == ["MISS", "MISS"]
    _, heuristic, _ = lb_cache(heuristic=True)
    assert results(heuristic, cache_url("h2", last_modified)) == ["MISS", "HIT"]
    not_heuristic = cache_url("h3", last_modified, status="201")
    assert results(heuristic, not_heuristic) == ["MISS", "MISS"]


def test_set_cookie_is_stored_only_when_switched_on(lb_cache) -> None:  # type: ignore[no-untyped-def]
    target = cache_url("sc", "cache-control: max-age=60", "set-cookie: s=1")
    backend, client, _ = lb_cache()
    assert results(client, target) == ["MISS", "MISS"]
    _, storing, _ = lb_cache(store_set_cookie=True)
    assert results(storing, target) == ["MISS", "HIT"]


def test_range_requests_are_answered_from_a_stored_complete_response(lb_cache) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = lb_cache()
    target = cache_url("r", "cache-control: max-age=60", size="10")
    # A Range request that misses goes upstream as it is; this backend answers it in full,
    # which is stored.
    first = client.get(target, headers={"range": "bytes=0-1"})
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    part = client.get(target, headers={"range": "bytes=2-4"})
    assert (part.status_code, part.content, part.headers["x-cache"]) == (206, b"xxx", "HIT")
    assert part.headers["content-range"] == "bytes 2-4/10"
    assert part.headers["content-length"] == "3"
    suffix = client.get(target, headers={"range": "bytes=-4"})
    assert suffix.status_code == 206 and suffix.headers["content-range"] == "bytes 6-9/10"
    beyond = client.get(target, headers={"range": "bytes=10-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == "bytes */10"
    several = client.get(target, headers={"range": "bytes=0-1, 4-5"})
    assert several.status_code == 200 and several.content == b"x" * 10
    other_unit = client.get(target, headers={"range": "items=0-1"})
    assert other_unit.status_code == 200
    assert backend.count("/cache/r") == 1
    # A stale entry: revalidated (the Range goes along), then the range is cut from it.
    stale = cache_url("rs", "cache-control: max-age=1", "age: 5", 'etag: "r"', size="10")
    client.get(stale)
    part = client.get(stale, headers={"range": "bytes=0-1"})
    assert (part.status_code, part.content, part.headers["x-cache"]) == (206, b"xx", "HIT")
    asked = backend.seen_headers("/cache/rs")[-1]
    assert asked["if-none-match"] == '"r"' and asked["range"] == "bytes=0-1"


def test_a_head_response_freshens_the_stored_get(lb_cache) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = lb_cache()
    target = cache_url("head", "cache-control: max-age=1", "age: 5", "x-v: 1", size="10")
    assert client.get(target).headers["x-cache"] == "MISS"  # stored, stale on arrival
    backend.cache_headers["/cache/head"] = [("cache-control", "max-age=60"), ("x-v", "2")]
    assert client.head(target).status_code == 200
    again = client.get(target)
    assert again.headers["x-cache"] == "HIT" and again.headers["x-v"] == "2"
    assert backend.count("/cache/head") == 2


def test_a_head_response_with_other_validators_outdates_the_stored_get(lb_cache) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = lb_cache()
    target = cache_url("head2", "cache-control: max-age=1", "age: 5", 'etag: "a"', size="10")
    client.get(target)
    backend.cache_headers["/cache/head2"] = [("cache-control", "max-age=60"), ("etag", '"b"')]
    client.head(target)
    assert client.get(target).headers["x-cache"] == "MISS"  # not refreshed by the HEAD


def test_max_stale_applies_to_entries_without_validators(lb_cache) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = lb_cache()
    target = cache_url("ms", "cache-control: max-age=1", "age: 5")
    client.get(target)
    stale = client.get(target, headers={"cache-control": "max-stale=100"})
    assert stale.headers["x-cache"] == "STALE" and backend.count("/cache/ms") == 1


def test_a_no_store_request_is_not_answered_from_the_store(lb_cache) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = lb_cache()
    target = cache_url("nsr", "cache-control: max-age=60")
    assert results(client, target) == ["MISS", "HIT"]
    fresh = client.get(target, headers={"cache-control": "no-store"})
    assert fresh.headers["x-cache"] == "MISS" and backend.count("/cache/nsr") == 2


def test_an_unquoted_etag_is_no_validator(lb_cache) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = lb_cache()
    target = cache_url("uq", "cache-control: max-age=1", "age: 5", "etag: abc")
    client.get(target)
    client.get(target)  # stale: asked again, without the malformed tag as a condition
    assert "if-none-match" not in backend.seen_headers("/cache/uq")[-1]
    fresh = cache_url("uq2", "cache-control: max-age=60", "etag: abc")
    client.get(fresh)
    unquoted = client.get(fresh, headers={"if-none-match": "abc"})
    assert unquoted.status_code == 200  # an If-None-Match without an entity-tag is ignored


# -- the revalidation path's 304s, from a scripted backend ---------------------------------------


def _lb(start_balancer, backend, log: Path | None = None) -> httpx.Client:  # type: ignore[no-untyped-def]
    config = pool_config([backend.url])
    config["cache"] = {"store": "memory"}
    if log is not None:
        config["logging"] = {"access_log": True, "file": str(log)}
    return httpx.Client(base_url=start_balancer(config).url, timeout=10)


STALE_200 = (
    b'HTTP/1.1 200 OK\r\ncache-control: max-age=1\r\nage: 5\r\netag: "a"\r\n'
    b"content-length: 10\r\n\r\n0123456789"
)


def test_a_304_with_content_length_refreshes_without_touching_the_body(  # type: ignore[no-untyped-def]
    start_balancer, raw_backend
) -> None:
    # RFC 9110 §8.6: a 304's Content-Length describes the selected representation; here it is
    # even a wrong one. It must neither replace the stored one nor cost the stored body.
    refreshed = b'HTTP/1.1 304 Not Modified\r\ncache-control: max-age=60\r\netag: "a"\r\n'
    backend = raw_backend(
        answer_each(
            lambda _c, n: STALE_200 if n == 1 else refreshed + b"content-length: 99\r\n\r\n"
        )
    )
    with _lb(start_balancer, backend) as client:
        client.get("/x")
        again = client.get("/x")
        assert (again.status_code, again.headers["x-cache"]) == (200, "HIT")
        assert again.content == b"0123456789" and again.headers["content-length"] == "10"
        assert client.get("/x").headers["x-cache"] == "HIT"  # fresh now, no request


def test_a_304_for_another_representation_is_refetched_as_a_request_of_its_own(  # type: ignore[no-untyped-def]
    start_balancer, raw_backend, tmp_path
) -> None:
    other = b'HTTP/1.1 304 Not Modified\r\netag: "zzz"\r\ncontent-length: 0\r\n\r\n'
    new = (
        b'HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\netag: "b"\r\ncontent-length: 3\r\n\r\nnew'
    )
    replies = {1: STALE_200, 2: other, 3: new}
    backend = raw_backend(answer_each(lambda _c, n: replies.get(n, new)))
    log = tmp_path / "access.log"
    with _lb(start_balancer, backend, log) as client:
        client.get("/y")
        again = client.get("/y")
        assert (again.status_code, again.content, again.headers["x-cache"]) == (200, b"new", "MISS")
        heads = [head for _, head in backend.heads]
        assert b'if-none-match: "a"' in heads[1].lower()
        assert b"if-none-match" not in heads[2].lower()  # asked again without conditions
        assert client.get("/y").headers["x-cache"] == "HIT"
    # The client's request was tried once: the cache's own second request is no retry of it.
    wait_until(lambda: len(log.read_text().splitlines()) == 3)
    second = json.loads(log.read_text().splitlines()[1])
    assert (second["status"], second["attempts"], second["cache"]) == (200, 1, "MISS")
