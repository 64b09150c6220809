"""SPEC section 7 through a real balancer in front of a real backend, counting what it saw.

The backend's `/cache/...` endpoints answer with the headers the query names (`h=Name:Value`).
Staleness needs no waiting: a backend `Age` larger than `max-age` makes a response stale on
arrival, and `max-age=0` with a validator makes every use a revalidation.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from apps import cache_url
from conftest import pool_config
from servers import wait_until

# -- storing and freshness ------------------------------------------------------------------------


def test_fresh_response_is_stored_and_served_with_age(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url("a", "cache-control: max-age=60", "age: 10")
    first = client.get(target)
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    # The entry exists before the next request can arrive: no waiting between the two.
    second = client.get(target)
    assert second.headers["x-cache"] == "HIT"
    assert second.json() == first.json()
    assert int(second.headers["age"]) >= 10
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert backend.count("/cache/a") == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(["cache-control: no-store, max-age=60"], id="no-store"),
        pytest.param(["cache-control: private, max-age=60"], id="private"),
        pytest.param([], id="no-freshness-default-ttl-0"),
        pytest.param(["cache-control: max-age=60", "set-cookie: s=1"], id="set-cookie"),
        pytest.param(["cache-control: max-age=60", "vary: *"], id="vary-star"),
    ],
)
def test_uncacheable_responses_go_upstream_every_time(cached, headers: list[str]) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url("u", *headers)
    results = [client.get(target).headers["x-cache"] for _ in range(3)]
    assert results == ["MISS", "MISS", "MISS"]
    assert backend.count("/cache/u") == 3


def test_default_ttl_is_the_only_heuristic(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached(default_ttl="1m")
    assert [client.get(cache_url("h")).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    created = cache_url("c", status="201")  # 201 is not heuristically cacheable
    assert [client.get(created).headers["x-cache"] for _ in range(2)] == ["MISS", "MISS"]


def test_s_maxage_wins_over_max_age_and_expires(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url("s", "cache-control: s-maxage=60, max-age=0", "expires: 0")
    assert [client.get(target).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    expired = cache_url("e", "expires: Thu, 01 Jan 1970 00:00:00 GMT")
    assert [client.get(expired).headers["x-cache"] for _ in range(2)] == ["MISS", "MISS"]


def test_authorization_requests_are_stored_only_when_the_response_allows(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    auth = {"authorization": "Bearer secret"}
    private = cache_url("auth", "cache-control: max-age=60")
    assert [client.get(private, headers=auth).headers["x-cache"] for _ in range(2)] == [
        "MISS",
        "MISS",
    ]
    public = cache_url("auth-public", "cache-control: public, max-age=60")
    assert [client.get(public, headers=auth).headers["x-cache"] for _ in range(2)] == [
        "MISS",
        "HIT",
    ]


def test_head_is_answered_from_a_stored_get(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url("head", "cache-control: max-age=60")
    body = client.get(target).content
    head = client.head(target)
    assert head.headers["x-cache"] == "HIT" and head.content == b""
    assert head.headers["content-length"] == str(len(body))
    assert backend.count("/cache/head") == 1


# -- Vary ---------------------------------------------------------------------------------------


def test_vary_keeps_one_variant_per_normalised_request_value(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url(
        "v", "cache-control: max-age=60", "vary: Accept-Encoding", echo="accept-encoding"
    )

    def get(value: str) -> httpx.Response:
        return client.get(target, headers={"accept-encoding": value})

    assert get("gzip, br").headers["x-cache"] == "MISS"
    assert get("identity").headers["x-cache"] == "MISS"
    again = get("br,GZIP")  # same value once whitespace, case and order are normalised
    assert again.headers["x-cache"] == "HIT"
    assert again.json()["echo"]["accept-encoding"] == "gzip, br"
    assert get("identity").json()["echo"]["accept-encoding"] == "identity"
    assert backend.count("/cache/v") == 2


# -- revalidation and conditional requests ------------------------------------------------------


def test_stale_entry_is_revalidated_and_a_304_refreshes_it(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url("r", "cache-control: max-age=0", 'etag: "v1"', "x-version: 1")
    first = client.get(target)
    assert first.headers["x-cache"] == "MISS"
    again = client.get(target)  # stale at once: revalidated, 304 upstream, stored body served
    assert again.headers["x-cache"] == "HIT" and again.json() == first.json()
    assert backend.seen_headers("/cache/r")[1]["if-none-match"] == '"v1"'
    # The 304 brings new header fields and freshness: they replace the stored ones.
    backend.cache_headers["/cache/r"] = [
        ("cache-control", "max-age=60"),
        ("etag", '"v1"'),
        ("x-version", "2"),
    ]
    refreshed = client.get(target)
    assert refreshed.headers["x-cache"] == "HIT" and refreshed.headers["x-version"] == "2"
    assert refreshed.json() == first.json()
    assert client.get(target).headers["x-cache"] == "HIT"
    assert backend.count("/cache/r") == 3  # the last one never left the cache


def test_revalidation_with_a_changed_representation_replaces_the_entry(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url("changed", "cache-control: max-age=0", 'etag: "v1"')
    first = client.get(target)
    backend.cache_headers["/cache/changed"] = [("cache-control", "max-age=60"), ("etag", '"v2"')]
    second = client.get(target)
    assert second.headers["x-cache"] == "MISS" and second.headers["etag"] == '"v2"'
    assert second.json()["n"] == first.json()["n"] + 1
    assert client.get(target).headers["x-cache"] == "HIT"


def test_last_modified_is_used_to_revalidate(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    modified = "Mon, 01 Jan 2024 00:00:00 GMT"
    target = cache_url("lm", "cache-control: max-age=0", f"last-modified: {modified}")
    client.get(target)
    assert client.get(target).headers["x-cache"] == "HIT"
    assert backend.seen_headers("/cache/lm")[1]["if-modified-since"] == modified


def test_client_conditional_answered_304_from_a_fresh_entry(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url("c", "cache-control: max-age=60", 'etag: "v1"')
    client.get(target)
    match = client.get(target, headers={"if-none-match": 'W/"v1"'})
    assert match.status_code == 304 and match.content == b""
    assert match.headers["etag"] == '"v1"' and match.headers["x-cache"] == "HIT"
    other = client.get(target, headers={"if-none-match": '"v0"'})
    assert other.status_code == 200 and other.headers["x-cache"] == "HIT"
    assert backend.count("/cache/c") == 1


def test_conditional_miss_fetches_in_full_and_answers_the_client_304(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url("cm", "cache-control: max-age=60", 'etag: "v1"')
    response = client.get(target, headers={"if-none-match": '"v1"'})
    assert response.status_code == 304 and response.headers["x-cache"] == "MISS"
    assert "if-none-match" not in backend.seen_headers("/cache/cm")[0]  # asked in full, to store it
    full = client.get(target)
    assert full.status_code == 200 and full.headers["x-cache"] == "HIT" and full.json()["n"] == 1


# -- request directives -------------------------------------------------------------------------


def test_request_directives(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url("d", "cache-control: max-age=60", 'etag: "v1"', "age: 30")

    def get(cc: str) -> httpx.Response:
        return client.get(target, headers={"cache-control": cc} if cc else {})

    assert get("only-if-cached").status_code == 504  # nothing stored: never goes upstream
    assert backend.count("/cache/d") == 0
    assert get("no-store").headers["x-cache"] == "MISS"  # not stored
    assert get("").headers["x-cache"] == "MISS"
    assert get("only-if-cached").headers["x-cache"] == "HIT"
    assert get("max-age=5").headers["x-cache"] == "HIT"  # revalidated (304): a HIT
    assert backend.seen_headers("/cache/d")[-1]["if-none-match"] == '"v1"'
    count = backend.count("/cache/d")
    assert get("no-cache").headers["x-cache"] == "HIT"
    assert backend.count("/cache/d") == count + 1
    assert get("min-fresh=40").headers["x-cache"] == "HIT"
    assert backend.count("/cache/d") == count + 2
    assert get("max-age=100").headers["x-cache"] == "HIT"
    assert backend.count("/cache/d") == count + 2


def test_a_no_store_request_passes_the_response_and_its_conditions_through(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url("ns", "cache-control: max-age=60", 'etag: "v1"', "x-cache: HIT")
    no_store = {"cache-control": "no-store"}
    full = client.get(target, headers=no_store)
    assert full.status_code == 200 and full.json()["n"] == 1
    assert full.headers.get_list("x-cache") == ["MISS"]  # the backend's own X-Cache replaced
    assert full.headers["etag"] == '"v1"' and full.headers["cache-control"] == "max-age=60"
    conditional = client.get(target, headers={**no_store, "if-none-match": '"v1"'})
    assert conditional.status_code == 304 and conditional.headers["x-cache"] == "MISS"
    assert (
        backend.seen_headers("/cache/ns")[-1]["if-none-match"] == '"v1"'
    )  # nothing to store: asked as is
    assert client.get(target, headers={"cache-control": "only-if-cached"}).status_code == 504


def test_max_stale_serves_a_stale_entry_without_asking(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url("ms", "cache-control: max-age=10", 'etag: "v1"', "age: 20")
    client.get(target)
    stale = client.get(target, headers={"cache-control": "max-stale=60"})
    assert stale.headers["x-cache"] == "STALE" and int(stale.headers["age"]) >= 20
    assert backend.count("/cache/ms") == 1
    too_old = client.get(target, headers={"cache-control": "max-stale=5"})
    assert too_old.headers["x-cache"] == "HIT"  # revalidated
    assert backend.count("/cache/ms") == 2


# -- stale-while-revalidate / stale-if-error -----------------------------------------------------


def test_stale_while_revalidate_serves_stale_and_refreshes_once(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url(
        "swr", "cache-control: max-age=1, stale-while-revalidate=60", "age: 5", delay="0.3"
    )
    first = client.get(target)
    assert first.headers["x-cache"] == "MISS"
    backend.cache_headers["/cache/swr"] = [("cache-control", "max-age=60")]
    # While the one background refresh takes its 0.3 s, every request is served stale at once.
    results = [client.get(target).headers["x-cache"] for _ in range(5)]
    assert results == ["STALE"] * 5
    wait_until(lambda: backend.count("/cache/swr") == 2)
    wait_until(lambda: client.get(target).headers["x-cache"] == "HIT")
    assert backend.count("/cache/swr") == 2
    assert client.get(target).json()["n"] == 2


def test_head_on_a_stale_get_entry_refreshes_it_with_a_get(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    target = cache_url("swr-head", "cache-control: max-age=1, stale-while-revalidate=60", "age: 5")
    client.get(target)
    backend.cache_headers["/cache/swr-head"] = [("cache-control", "max-age=60")]
    head = client.head(target)
    assert head.headers["x-cache"] == "STALE" and head.content == b""
    wait_until(lambda: backend.count("/cache/swr-head") == 2)
    with backend.lock:
        assert [r["method"] for r in backend.seen] == ["GET", "GET"]
    wait_until(lambda: client.get(target).headers["x-cache"] == "HIT")


def test_stale_if_error_serves_stale_when_the_backend_fails(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, lb = cached()
    target = cache_url("sie", "cache-control: max-age=1, stale-if-error=600", "age: 5")
    plain = cache_url("nosie", "cache-control: max-age=1", 'etag: "x"', "age: 5")
    strict = cache_url("strict", "cache-control: max-age=1, stale-if-error=600, must-revalidate",
                 'etag: "x"', "age: 5")  # fmt: skip
    bodies = {t: client.get(t).json() for t in (target, plain, strict)}
    backend.status = 500
    stale = client.get(target)
    assert stale.status_code == 200 and stale.headers["x-cache"] == "STALE"
    assert stale.json() == bodies[target]
    assert client.get(plain).status_code == 500  # no permission to serve stale
    assert client.get(strict).status_code == 500  # must-revalidate forbids it
    # The client may allow it too (RFC 5861 §4).
    allowed = client.get(plain, headers={"cache-control": "stale-if-error=600"})
    assert allowed.status_code == 200 and allowed.headers["x-cache"] == "STALE"


def test_stale_if_error_covers_an_unreachable_backend(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    config = pool_config([server.url])
    config["cache"] = {"store": "memory"}
    lb = start_balancer(config)
    target = cache_url("down", "cache-control: max-age=1, stale-if-error=600", "age: 5")
    with httpx.Client(base_url=lb.url) as client:
        body = client.get(target).json()
        server.stop()
        stale = client.get(target)
        assert stale.status_code == 200 and stale.json() == body
        assert stale.headers["x-cache"] == "STALE"


# -- collapsing ---------------------------------------------------------------------------------


def _concurrent_gets(base: str, target: str, n: int) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            return list(await asyncio.gather(*(client.get(target) for _ in range(n))))

    return asyncio.run(run())


def test_stampede_of_100_cold_requests_reaches_the_backend_once(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, lb = cached()
    target = cache_url("stampede", "cache-control: max-age=60", delay="0.5")
    responses = _concurrent_gets(lb.url, target, 100)
    assert [r.status_code for r in responses] == [200] * 100
    assert backend.count("/cache/stampede") == 1
    assert len({r.content for r in responses}) == 1
    results = sorted(r.headers["x-cache"] for r in responses)
    assert results.count("MISS") == 1 and results.count("HIT") == 99


def test_a_waiting_request_gives_up_after_the_collapse_timeout(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, lb = cached()
    lb.app.generation.cache.collapse_timeout = 0.2
    target = cache_url("slow", "cache-control: max-age=60", delay="1")
    responses = _concurrent_gets(lb.url, target, 2)
    assert [r.status_code for r in responses] == [200, 200]
    assert backend.count("/cache/slow") == 2  # the waiter went upstream itself
    assert sorted(r.headers["x-cache"] for r in responses) == ["MISS", "MISS"]


def test_uncacheable_responses_are_not_shared_between_waiters(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, lb = cached()
    target = cache_url("private", "cache-control: private, max-age=60", delay="0.2")
    responses = _concurrent_gets(lb.url, target, 10)
    assert [r.status_code for r in responses] == [200] * 10
    assert backend.count("/cache/private") == 10
    assert {r.headers["x-cache"] for r in responses} == {"MISS"}


# -- invalidation -------------------------------------------------------------------------------


def test_unsafe_methods_invalidate_the_target_and_same_origin_locations(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    for path in ("/cache/item", "/cache/other", "/cache/list"):
        backend.cache_headers[path] = [("cache-control", "max-age=60")]
    for path in ("/cache/item", "/cache/other", "/cache/list"):
        client.get(path)
        assert client.get(path).headers["x-cache"] == "HIT"
    failed = client.post("/cache/item", params={"status": "500"})
    assert failed.headers["x-cache"] == "BYPASS"
    assert client.get("/cache/item").headers["x-cache"] == "HIT"  # an error invalidates nothing
    backend.cache_headers["/cache/list"] = [
        ("location", "/cache/item"),
        ("content-location", "http://elsewhere.example/cache/other"),
    ]
    posted = client.post("/cache/list", content=b"new item")
    assert posted.status_code == 200 and posted.headers["x-cache"] == "BYPASS"
    assert client.get("/cache/list").headers["x-cache"] == "MISS"
    assert client.get("/cache/item").headers["x-cache"] == "MISS"
    assert client.get("/cache/other").headers["x-cache"] == "HIT"  # another origin: kept


def test_bypass_and_routes_without_cache(cached) -> None:  # type: ignore[no-untyped-def]
    routes = [{"path_prefix": "/nocache", "pool": "web", "cache": False}, {"pool": "web"}]
    backend, client, _ = cached(routes=routes)
    assert client.options("/echo").headers["x-cache"] == "BYPASS"
    assert client.get("/echo", headers={"if-range": '"x"'}).headers["x-cache"] == "BYPASS"
    assert "x-cache" not in client.get("/nocache").headers


# -- size limits --------------------------------------------------------------------------------


def test_responses_over_max_entry_bytes_stream_through_unstored(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached(max_entry_bytes="64KiB")
    for chunked in ({}, {"chunked": "1"}):
        target = cache_url("big", "cache-control: max-age=60", size="300000", **chunked)
        for _ in range(2):
            response = client.get(target)
            assert response.headers["x-cache"] == "MISS" and len(response.content) == 300000
    assert backend.count("/cache/big") == 4
    small = cache_url("small", "cache-control: max-age=60", size="1000", chunked="1")
    assert "content-length" not in client.get(small).headers
    hit = client.get(small)
    assert hit.headers["x-cache"] == "HIT" and hit.headers["content-length"] == "1000"
    assert len(hit.content) == 1000


def test_a_storable_response_still_streams_while_it_is_copied(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached(default_ttl="1m")  # /sse carries no freshness of its own
    backend.release.clear()
    with client.stream("GET", "/sse") as response:
        chunks = response.iter_bytes()
        assert next(chunks) == b"data: first\n\n"  # before the backend has finished
        backend.release.set()
        assert b"".join(chunks) == b"data: second\n\n"
    hit = client.get("/sse")
    assert hit.headers["x-cache"] == "HIT"
    assert hit.content == b"data: first\n\ndata: second\n\n"
    assert backend.count("/sse") == 1


# -- purge, access log, reload ------------------------------------------------------------------


def test_purge_one_target_for_every_host_or_everything(cached) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = cached()
    backend.cache_headers["/cache/p"] = [("cache-control", "max-age=60")]
    backend.cache_headers["/cache/q"] = [("cache-control", "max-age=60")]
    targets = [
        ("/cache/p?x=1", "a.example"),
        ("/cache/p?x=1", "b.example"),
        ("/cache/q", "a.example"),
    ]

    def results() -> list[str]:
        return [client.get(t, headers={"host": h}).headers["x-cache"] for t, h in targets]

    results()
    assert results() == ["HIT", "HIT", "HIT"]
    purged = client.delete("/_lb/cache", params={"path": "/cache/p?x=1"})
    assert purged.status_code == 200
    one = {"workers": 1, "of": 1, "not_applied": []}
    assert purged.json() == {"purged": 2, "path": "/cache/p?x=1", "applied": one}
    assert results() == ["MISS", "MISS", "HIT"]
    raw = client.delete("/_lb/cache?path=/cache/p?x=1")  # unencoded, as the SPEC writes it
    assert raw.json()["purged"] == 2
    assert client.delete("/_lb/cache").json()["purged"] == 1
    assert results() == ["MISS", "MISS", "MISS"]
    assert client.delete("/_lb/cache?nonsense").status_code == 400


def test_purge_is_guarded_like_the_admin(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    config = pool_config([server.url])
    config["cache"] = {}
    config["admin"] = {"token": "t0ken"}
    lb = start_balancer(config)
    with httpx.Client(base_url=lb.url) as client:
        assert client.delete("/_lb/cache").status_code == 401
        ok = client.delete("/_lb/cache", headers={"authorization": "Bearer t0ken"})
        assert ok.status_code == 200


def test_purge_without_a_cache_is_404(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    lb = start_balancer(pool_config([server.url]))
    assert httpx.delete(lb.url + "/_lb/cache").status_code == 404


def test_access_log_and_metrics_record_the_result(start_backends, start_balancer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ((backend, server),) = start_backends(1)
    log = tmp_path / "access.log"
    config = pool_config([server.url])
    config["cache"] = {}
    config["logging"] = {"access_log": True, "file": str(log)}
    lb = start_balancer(config)
    target = cache_url("log", "cache-control: max-age=60")
    with httpx.Client(base_url=lb.url) as client:
        client.get(target)
        client.get(target)
        client.post("/echo")
        metrics = client.get("/_lb/metrics").text

    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in log.read_text().splitlines() if line]

    wait_until(lambda: len(lines()) == 3)
    assert [line["cache"] for line in lines()] == ["MISS", "HIT", "BYPASS"]
    miss, hit, _ = lines()
    assert hit["bytes_sent"] == miss["bytes_sent"] > 0
    assert hit["backend"] is None and miss["backend"] is not None
    for result in ("miss", "hit", "bypass"):
        assert f'lb_cache_requests_total{{result="{result}"}} 1.0' in metrics


def test_a_new_generation_with_the_same_cache_config_keeps_the_entries(start_backends) -> None:  # type: ignore[no-untyped-def]
    from lb.app import LoadBalancer

    ((backend, server),) = start_backends(1)
    config = pool_config([server.url])
    config["cache"] = {"max_entries": 100}
    app = LoadBalancer(config)
    kept = app.runtime.build(app.config)
    assert kept.cache is app.generation.cache
    changed = LoadBalancer({**config, "cache": {"max_entries": 50}})
    replaced = app.runtime.build(changed.config)
    assert replaced.cache is not app.generation.cache
    assert list(kept.services()) == [kept.cache]
