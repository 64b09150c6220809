"""Route `compress` (SPEC section 12) through a real balancer in front of a real backend: what
real clients decode, what passes untouched, SSE kept live, and one cache variant per coding.

The backend's `/cache/...` answers with the headers the query names; `size=N` gives a body of N
bytes, typed by an `h=content-type:...` header.
"""

from __future__ import annotations

import gzip
import subprocess
import threading
import zlib
from email.utils import formatdate

import httpx
import pytest
from httplint.note import levels

from apps import cache_url
from conftest import pool_config
from programs import program
from servers import raw_request

TEXT = "content-type: text/plain; charset=utf-8"
BIG = 5000  # over the default min_bytes (1024)


@pytest.fixture
def compressing(start_backends, start_balancer):  # type: ignore[no-untyped-def]
    """`compressing(compress=True, cache=None)` -> (Backend app, httpx client, balancer)."""
    clients: list[httpx.Client] = []

    def factory(compress: object = True, cache: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
        ((backend, server),) = start_backends(1)
        config = pool_config([server.url])
        config["routes"] = [{"pool": "web", "compress": compress}]
        if cache is not None:
            config["cache"] = {"store": "memory", **cache}
        lb = start_balancer(config)
        client = httpx.Client(base_url=lb.url, timeout=10)
        clients.append(client)
        return backend, client, lb

    yield factory
    for client in clients:
        client.close()


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_each_coding_is_decoded_by_httpx(compressing, coding: str) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = compressing()
    target = cache_url("c", TEXT, 'etag: "v1"', size=str(BIG))
    response = client.get(target, headers={"accept-encoding": coding})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == coding
    assert response.content == b"x" * BIG  # httpx decoded it
    assert "content-length" not in response.headers  # chunked: the length is not known ahead
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["etag"] == 'W/"v1"'
    assert response.num_bytes_downloaded < 200  # what came over the wire was the coded form
    # The backend was asked for the chosen coding only.
    assert backend.seen_headers("/cache/c")[-1]["accept-encoding"] == coding


def test_curl_compressed_decodes_gzip(compressing) -> None:  # type: ignore[no-untyped-def]
    _, _, lb = compressing({"encodings": ["gzip"]})
    url = lb.url + cache_url("curl", TEXT, size=str(BIG))
    done = subprocess.run(
        [program("curl"), "-sS", "--compressed", "-D", "-", "-w", "\n%{size_download}", url],
        capture_output=True,
        check=True,
        timeout=20,
    )
    head, _, rest = done.stdout.partition(b"\r\n\r\n")
    body, _, downloaded = rest.rpartition(b"\n")
    assert b"content-encoding: gzip" in head.lower()
    assert body == b"x" * BIG
    assert int(downloaded) < 200


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip;q=0.5, br;q=0.9", "br"),
        ("gzip, br, zstd", "zstd"),  # equal weights: the configured order
        ("br;q=0, *", "zstd"),
        ("gzip;q=0.5, identity", None),
        ("gzip;q=0", None),
        ("identity", None),
    ],
)
def test_q_values_choose_the_coding(compressing, accept: str, coding: str | None) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = compressing()
    response = client.get(cache_url("q", TEXT, size=str(BIG)), headers={"accept-encoding": accept})
    assert response.headers.get("content-encoding") == coding
    assert response.content == b"x" * BIG
    assert response.headers["vary"] == "Accept-Encoding"


def test_no_accept_encoding_gets_identity(compressing) -> None:  # type: ignore[no-untyped-def]
    backend, _, lb = compressing()
    with httpx.Client(base_url=lb.url, headers={"accept-encoding": ""}) as plain:
        plain.headers.pop("accept-encoding")
        response = plain.get(cache_url("none", TEXT, size=str(BIG)))
    assert "content-encoding" not in response.headers
    assert response.headers["content-length"] == str(BIG)
    assert backend.seen_headers("/cache/none")[-1]["accept-encoding"] == "identity"


def test_already_compressed_passes_through(compressing) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = compressing()
    response = client.get("/gzip", headers={"accept-encoding": "br, gzip"})
    assert response.headers["content-encoding"] == "gzip"  # the backend's, not re-encoded
    assert response.content == b"hello gzip " * 100
    assert int(response.headers["content-length"]) == response.num_bytes_downloaded
    assert response.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize(
    ("headers", "vary"),
    [
        pytest.param([TEXT], True, id="under-min-bytes"),
        pytest.param(["content-type: image/png"], False, id="type-not-listed"),
        pytest.param([TEXT, "cache-control: no-transform"], False, id="no-transform"),
    ],
)
def test_left_alone(compressing, headers: list[str], vary: bool) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = compressing()
    size = "100" if vary else str(BIG)
    response = client.get(
        cache_url("alone", *headers, size=size), headers={"accept-encoding": "gzip"}
    )
    assert "content-encoding" not in response.headers
    assert response.headers["content-length"] == size
    assert ("vary" in response.headers) is vary


def test_min_bytes_and_types_are_configurable(compressing) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = compressing({"min_bytes": 10, "types": ["image/*"]})
    gz = {"accept-encoding": "gzip"}
    small = client.get(cache_url("small", "content-type: image/png", size="100"), headers=gz)
    assert small.headers["content-encoding"] == "gzip" and small.content == b"x" * 100
    text = client.get(cache_url("text", TEXT, size=str(BIG)), headers=gz)
    assert "content-encoding" not in text.headers


def test_unknown_length_is_compressed_when_the_type_fits(compressing) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = compressing()
    response = client.get(
        cache_url("chunked", TEXT, size="100", chunked="1"), headers={"accept-encoding": "gzip"}
    )
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == b"x" * 100


def test_range_requests_are_not_compressed(compressing) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = compressing()
    response = client.get(
        cache_url("range", TEXT, size=str(BIG)),
        headers={"accept-encoding": "gzip", "range": "bytes=0-9"},
    )
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"


def test_head_headers_match_the_get(compressing) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = compressing()
    target = cache_url("head", TEXT, 'etag: "h"', size=str(BIG))
    head = client.head(target, headers={"accept-encoding": "br"})
    get = client.get(target, headers={"accept-encoding": "br"})
    assert head.status_code == 200 and head.content == b""
    for name in ("content-encoding", "vary", "etag", "content-type"):
        assert head.headers.get(name) == get.headers.get(name), name
    assert "content-length" not in head.headers


def test_sse_events_arrive_as_they_are_sent(compressing) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = compressing()
    with client.stream("GET", "/sse", headers={"accept-encoding": "gzip"}) as response:
        assert response.headers["content-encoding"] == "gzip"
        chunks = response.iter_bytes()
        # The backend holds its second event until released: the first must come through now.
        first = next(chunks)
        assert first == b"data: first\n\n"
        assert not backend.release.is_set()
        backend.release.set()
        assert b"".join(chunks) == b"data: second\n\n"


def test_sse_raw_chunks_decode_on_their_own(compressing) -> None:  # type: ignore[no-untyped-def]
    """The first event's bytes on the wire are a complete deflate block (sync flush)."""
    backend, client, _ = compressing({"encodings": ["gzip"]})
    decoder = zlib.decompressobj(31)
    timer = threading.Timer(5.0, backend.release.set)  # the test must not hang if it fails
    timer.start()
    try:
        with client.stream("GET", "/sse", headers={"accept-encoding": "gzip"}) as response:
            raw = response.iter_raw()
            assert decoder.decompress(next(raw)) == b"data: first\n\n"
            assert not backend.release.is_set()
            backend.release.set()
            rest = b"".join(raw)
        assert decoder.decompress(rest) == b"data: second\n\n"
        assert decoder.eof
    finally:
        timer.cancel()


# -- with the cache -------------------------------------------------------------------------------


def test_cache_keeps_one_variant_per_coding(compressing) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = compressing(cache={})
    target = cache_url("v", TEXT, "cache-control: max-age=60", size=str(BIG))

    def get(accept: str) -> httpx.Response:
        return client.get(target, headers={"accept-encoding": accept})

    gz, plain = get("gzip"), get("identity")
    assert (gz.headers["x-cache"], plain.headers["x-cache"]) == ("MISS", "MISS")
    again_gz, again_plain = get("gzip"), get("identity")
    assert again_gz.headers["x-cache"] == "HIT"
    assert again_gz.headers["content-encoding"] == "gzip"
    assert again_gz.content == b"x" * BIG
    assert again_plain.headers["x-cache"] == "HIT"
    assert "content-encoding" not in again_plain.headers
    assert again_plain.content == b"x" * BIG
    # Another spelling of the same choice is the same variant: no new entry per header value.
    other = get("deflate, gzip;q=0.9, br;q=0.1")
    assert other.headers["x-cache"] == "HIT" and other.headers["content-encoding"] == "gzip"
    assert get("br").headers["x-cache"] == "MISS"
    assert get("br;q=1, gzip;q=0.5").headers["x-cache"] == "HIT"
    assert backend.count("/cache/v") == 3


def test_conditional_request_gets_304_from_the_cache(compressing) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = compressing(cache={})
    target = cache_url("etag", TEXT, 'etag: "e1"', "cache-control: max-age=60", size=str(BIG))
    first = client.get(target, headers={"accept-encoding": "gzip"})
    assert first.headers["etag"] == 'W/"e1"'
    again = client.get(
        target, headers={"accept-encoding": "gzip", "if-none-match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.headers["x-cache"] == "HIT"
    assert again.headers["etag"] == 'W/"e1"'
    assert backend.count("/cache/etag") == 1


def test_head_from_the_cache(compressing) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = compressing(cache={})
    target = cache_url("hc", TEXT, "cache-control: max-age=60", size=str(BIG))
    get = client.get(target, headers={"accept-encoding": "zstd"})
    head = client.head(target, headers={"accept-encoding": "zstd"})
    assert head.headers["x-cache"] == "HIT" and head.content == b""
    assert head.headers["content-encoding"] == get.headers["content-encoding"] == "zstd"


def test_metrics_count_bytes_before_and_after(compressing) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = compressing()
    client.get(cache_url("m", TEXT, size=str(BIG)), headers={"accept-encoding": "gzip"})
    text = client.get("/_lb/metrics").text
    assert 'lb_compressed_responses_total{encoding="gzip"} 1.0' in text
    assert f'lb_compression_bytes_total{{encoding="gzip",stage="in"}} {BIG}.0' in text
    out = next(
        line
        for line in text.splitlines()
        if line.startswith("lb_compression_bytes_total{") and 'stage="out"' in line
    )
    assert 0 < float(out.rsplit(" ", 1)[1]) < 200


def test_gzip_decodes_with_the_standard_library(compressing) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = compressing({"encodings": ["gzip"]})
    with client.stream(
        "GET", cache_url("std", TEXT, size=str(BIG)), headers={"accept-encoding": "gzip"}
    ) as response:
        raw = b"".join(response.iter_raw())
    assert gzip.decompress(raw) == b"x" * BIG


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_compressed_responses_pass_httplint(compressing, coding: str) -> None:  # type: ignore[no-untyped-def]
    from integration.test_httplint import lint

    _, _, lb = compressing(cache={})
    date = f"date: {formatdate(usegmt=True)}"  # a backend without one is linted for it
    target = cache_url("lint", TEXT, date, 'etag: "l1"', "cache-control: max-age=60", size=str(BIG))
    port = lb.url.rsplit(":", 1)[1]
    for result in ("MISS", "HIT"):
        data = (
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept-Encoding: {coding}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        response = raw_request(int(port), data)
        assert response.header("x-cache") == result
        assert response.header("content-encoding") == coding
        bad = [
            f"{type(note).__name__}: {note.summary}"
            for note in lint(response)
            if note.level in (levels.BAD, levels.WARN)
        ]
        assert not bad, (result, bad)


def test_stale_compressed_entry_is_revalidated_with_a_304(compressing) -> None:  # type: ignore[no-untyped-def]
    backend, client, _ = compressing(cache={})
    target = cache_url("reval", TEXT, 'etag: "r1"', "cache-control: max-age=0", size=str(BIG))
    gz = {"accept-encoding": "gzip"}
    assert client.get(target, headers=gz).headers["x-cache"] == "MISS"
    again = client.get(target, headers=gz)
    # The backend's 304 refreshed the stored gzip variant: lb answered from it.
    assert again.headers["x-cache"] == "HIT"
    assert again.headers["content-encoding"] == "gzip" and again.content == b"x" * BIG
    assert again.headers["etag"] == 'W/"r1"'
    seen = backend.seen_headers("/cache/reval")
    assert len(seen) == 2 and seen[1]["if-none-match"] == 'W/"r1"'


def test_backend_304_carries_the_coded_validator(compressing) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = compressing()
    target = cache_url("nm", TEXT, 'etag: "n1"', size=str(BIG))
    first = client.get(target, headers={"accept-encoding": "br"})
    again = client.get(
        target, headers={"accept-encoding": "br", "if-none-match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.headers["etag"] == 'W/"n1"'
    assert again.headers["vary"] == "Accept-Encoding"
