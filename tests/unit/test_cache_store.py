"""The cache's entries, their binary form, the memory store's bounds and the Cache's bookkeeping."""

from __future__ import annotations

import asyncio

from lb.cache import Cache, MemoryStore
from lb.cache.entry import KEEP_FOR_REVALIDATION, KEEP_STALE, Entry, select
from lb.cache.keys import primary_key
from lb.cache.rules import ResponseInfo
from lb.cache.store import MAX_VARIANTS
from lb.cache.vary import secondary_key
from lb.config import CacheConfig
from lb.metrics import Metrics

NOW = 1_700_000_000.0


def make_entry(
    target: bytes = b"/a",
    *,
    host: bytes = b"h",
    body: bytes = b"hello",
    headers: list[tuple[bytes, bytes]] | None = None,
    lifetime: float = 60.0,
    response_time: float = NOW,
    request_headers: list[tuple[bytes, bytes]] | None = None,
    method: str = "GET",
) -> Entry:
    headers = headers if headers is not None else [(b"content-type", b"text/plain")]
    info = ResponseInfo(headers)
    return Entry(
        primary_key(method, "http", host, target),
        200,
        headers,
        body,
        response_time=response_time,
        initial_age=0.0,
        lifetime=lifetime,
        vary=info.vary,
        secondary=secondary_key(info.vary, request_headers or []),
    )


def test_entry_round_trips_through_its_binary_form() -> None:
    headers = [(b"vary", b"accept-encoding"), (b"etag", b'"v1"'), (b"x-odd", b"\x00\xff")]
    entry = make_entry(
        body=b"a" * 5000, headers=headers, request_headers=[(b"accept-encoding", b"gzip")]
    )
    blob = entry.encode()
    assert len(blob) < 1000  # a compressible body is stored compressed
    back = Entry.decode(blob)
    assert back is not None
    assert (back.primary, back.status, back.headers, back.body) == (
        entry.primary, 200, headers, entry.body,
    )  # fmt: skip
    assert (back.vary, back.secondary, back.etag, back.stored_until) == (
        ("accept-encoding",), entry.secondary, b'"v1"', entry.stored_until,
    )  # fmt: skip


def test_encoded_coded_body_is_kept_as_is_and_garbage_decodes_to_none() -> None:
    entry = make_entry(body=b"z" * 4096, headers=[(b"content-encoding", b"gzip")])
    assert entry.body in entry.encode()
    assert Entry.decode(b"") is None
    assert Entry.decode(b"\x09" + entry.encode()[1:]) is None  # another version


def test_storage_deadline_keeps_validated_entries_for_revalidation() -> None:
    plain = make_entry(lifetime=60)
    validated = make_entry(lifetime=60, headers=[(b"etag", b'"x"')])
    sie = make_entry(lifetime=60, headers=[(b"cache-control", b"max-age=60, stale-if-error=900")])
    # Kept a while past freshness even without validators: a client's max-stale may accept it.
    assert plain.stored_until == NOW + 60 + KEEP_STALE
    assert validated.stored_until == NOW + 60 + KEEP_FOR_REVALIDATION
    assert sie.stored_until == NOW + 960


def test_select_prefers_matching_and_most_recent_variant() -> None:
    vary = [(b"vary", b"accept-language")]
    de = make_entry(headers=vary, request_headers=[(b"accept-language", b"de")])
    en_old = make_entry(headers=vary, request_headers=[(b"accept-language", b"en")])
    en_new = make_entry(
        headers=[*vary, (b"x-new", b"1")],
        request_headers=[(b"accept-language", b"en")],
        response_time=NOW + 5,
    )
    entries = [de, en_new, en_old]
    assert select(entries, [(b"accept-language", b"en")]) is en_new
    assert select(entries, [(b"accept-language", b"de")]) is de
    assert select(entries, [(b"accept-language", b"fr")]) is None


async def test_memory_store_is_lru_bounded_by_entries() -> None:
    store = MemoryStore(max_entries=3, max_bytes=10**9)
    for name in (b"/1", b"/2", b"/3"):
        await store.put(make_entry(name), NOW)
    await store.variants(primary_key("GET", "http", b"h", b"/1"), NOW)  # /1 becomes recent
    await store.put(make_entry(b"/4"), NOW)
    alive = [t for t in (b"/1", b"/2", b"/3", b"/4")
             if await store.variants(primary_key("GET", "http", b"h", t), NOW)]  # fmt: skip
    assert alive == [b"/1", b"/3", b"/4"]
    assert store.entries == 3


async def test_memory_store_is_bounded_by_bytes() -> None:
    one = make_entry(b"/1", body=b"x" * 1000)
    store = MemoryStore(max_entries=100, max_bytes=one.size * 2 + 10)
    for name in (b"/1", b"/2", b"/3"):
        await store.put(make_entry(name, body=b"x" * 1000), NOW)
    assert store.entries == 2 and store.bytes <= store.max_bytes
    assert not await store.variants(one.primary, NOW)
    assert "2/100 entries" in repr(store)


async def test_memory_store_variants_replace_expire_and_are_bounded() -> None:
    store = MemoryStore(max_entries=1000, max_bytes=10**9)
    vary = [(b"vary", b"x-v")]
    first = make_entry(headers=vary, request_headers=[(b"x-v", b"1")])
    await store.put(first, NOW)
    await store.put(make_entry(headers=vary, request_headers=[(b"x-v", b"1")], body=b"new"), NOW)
    variants = await store.variants(first.primary, NOW)
    assert [v.body for v in variants] == [b"new"] and store.entries == 1
    for i in range(MAX_VARIANTS + 5):
        request = [(b"x-v", str(i).encode())]
        await store.put(make_entry(headers=vary, request_headers=request), NOW)
    assert len(await store.variants(first.primary, NOW)) == MAX_VARIANTS
    assert (
        await store.variants(first.primary, NOW + 61 + KEEP_STALE) == []
    )  # past every storage deadline
    assert store.entries == 0 and store.bytes == 0


async def test_memory_store_purges_a_target_on_every_host_and_method() -> None:
    store = MemoryStore(max_entries=100, max_bytes=10**9)
    for host in (b"a", b"b"):
        for method in ("GET", "HEAD"):
            await store.put(make_entry(b"/x?y=1", host=host, method=method), NOW)
    await store.put(make_entry(b"/x"), NOW)
    assert await store.purge(b"/x?y=1") == 4
    assert store.entries == 1
    assert await store.purge(None) == 1
    assert store.entries == 0


def test_cache_repr_and_uncacheable_marks_are_bounded() -> None:
    cache = Cache(CacheConfig(), Metrics())
    assert "MemoryStore" in repr(cache)
    for i in range(5000):
        cache.uncacheable(str(i).encode())
    assert not cache.collapsible(b"4999")
    assert cache.collapsible(b"0")  # the oldest marks were dropped


async def test_cache_runs_one_background_refresh_per_key_and_stops_them() -> None:
    cache = Cache(CacheConfig(), Metrics())
    await cache.start()
    started = asyncio.Event()
    runs = 0

    async def refresh() -> None:
        nonlocal runs
        runs += 1
        started.set()
        await asyncio.sleep(3600)

    cache.refresh_in_background(b"k", refresh)
    cache.refresh_in_background(b"k", refresh)
    await started.wait()
    assert runs == 1 and len(cache.refreshing) == 1
    await cache.stop()
    assert cache.refreshing == {}
