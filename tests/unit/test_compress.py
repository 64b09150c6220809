"""Route `compress`: Accept-Encoding negotiation (sans I/O), the encoders, and its config."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import brotli  # type: ignore[import-untyped]
import pytest
import zstandard

from lb.compress.coders import ENCODERS, window_bits
from lb.compress.layer import Compression, _marked, _Response
from lb.compress.negotiate import Negotiator, choose, weights
from lb.config import ConfigError, load_config
from lb.config.model import CompressConfig
from lb.metrics import Metrics

ALL = ("zstd", "br", "gzip")


@pytest.mark.parametrize(
    ("header", "offered", "chosen"),
    [
        pytest.param(None, ALL, None, id="no-field-identity"),
        pytest.param("gzip", ALL, "gzip", id="one"),
        pytest.param("gzip, deflate, br, zstd", ALL, "zstd", id="tie-configured-order"),
        pytest.param("gzip, deflate, br, zstd", ("gzip", "br"), "gzip", id="tie-other-order"),
        pytest.param("gzip;q=0.5, br;q=0.9", ALL, "br", id="weights"),
        pytest.param("GZIP ; Q=0.8 , br ; q=0.2", ALL, "gzip", id="case-and-spaces"),
        pytest.param("gzip;q=0", ALL, None, id="q0-excludes"),
        pytest.param("br;q=0, *", ("br", "gzip"), "gzip", id="star-covers-the-rest"),
        pytest.param("*;q=0.3, gzip;q=0.2", ("gzip", "zstd"), "zstd", id="star-weight"),
        pytest.param("*;q=0", ALL, None, id="star-q0"),
        pytest.param("identity", ALL, None, id="identity-only"),
        pytest.param("gzip;q=0.5, identity", ALL, None, id="identity-preferred"),
        pytest.param("gzip, identity;q=0", ALL, "gzip", id="identity-refused"),
        pytest.param("gzip;q=0.5, identity;q=0.5", ALL, "gzip", id="tie-with-identity"),
        pytest.param("deflate, compress", ALL, None, id="nothing-offered"),
        pytest.param("x-gzip", ALL, "gzip", id="x-gzip-alias"),
        pytest.param("gzip;q=2, br;q=abc", ALL, None, id="malformed-weights-are-0"),
        pytest.param("", ALL, None, id="empty"),
        pytest.param(",,gzip,,", ALL, "gzip", id="empty-elements"),
    ],
)
def test_choose(header: str | None, offered: tuple[str, ...], chosen: str | None) -> None:
    values = [] if header is None else [header.encode()]
    assert choose(values, offered) == chosen


def test_weights_keep_the_kinder_of_a_coding_listed_twice() -> None:
    assert weights(b"gzip;q=0, gzip;q=0.4") == {"gzip": 0.4}


def test_negotiator_memo_is_bounded() -> None:
    negotiate = Negotiator(ALL)
    for i in range(1000):
        assert negotiate(f"gzip;q=0.{i % 10}, x{i}".encode()) == ("gzip" if i % 10 else None)
    assert len(negotiate._memo) <= 256
    assert negotiate(None) is None


@pytest.mark.parametrize(
    ("coding", "decode"),
    [
        ("gzip", gzip.decompress),
        ("br", brotli.decompress),
        ("zstd", lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data)),
    ],
)
@pytest.mark.parametrize("sized", [False, True])
def test_encoders_stream_and_flush(coding: str, decode: Any, sized: bool) -> None:
    chunks = [b"%d " % i * 50 for i in range(200)]
    size = len(b"data: first\n\n" + b"".join(chunks)) if sized else None
    encoder = ENCODERS[coding](size)
    out = encoder.compress(b"data: first\n\n") + encoder.flush()
    if coding == "gzip":  # a sync flush makes what came so far decodable at once
        assert zlib.decompressobj(31).decompress(out) == b"data: first\n\n"
    for chunk in chunks:
        out += encoder.compress(chunk)
    out += encoder.finish()
    assert decode(out) == b"data: first\n\n" + b"".join(chunks)


def test_window_bits_follow_the_size() -> None:
    assert window_bits(None, 15) == 15
    assert window_bits(10_761, 15) == 14
    assert window_bits(100, 15) == 9
    assert window_bits(10**9, 15) == 15
    assert window_bits(1 << 20, 22) == 21


def test_compressible_types() -> None:
    compression = Compression(CompressConfig(types=("text/*", "application/json")), Metrics())
    assert compression.compressible(b"text/html; charset=utf-8")
    assert compression.compressible(b"Application/JSON")
    assert not compression.compressible(b"application/json-seq")
    assert not compression.compressible(b"image/png")
    assert not compression.compressible(b"")


def test_marked_merges_vary_and_weakens_etag() -> None:
    headers = [
        (b"content-length", b"5000"),
        (b"etag", b'"v1"'),
        (b"vary", b"Origin"),
        (b"accept-ranges", b"bytes"),
        (b"vary", b"Cookie"),
    ]
    assert _marked(headers, b"br") == [
        (b"etag", b'W/"v1"'),
        (b"vary", b"Origin, Cookie, Accept-Encoding"),
        (b"content-encoding", b"br"),
    ]
    assert _marked([(b"vary", b"accept-encoding"), (b"etag", b'W/"x"')], None) == [
        (b"etag", b'W/"x"'),
        (b"vary", b"accept-encoding"),
    ]
    assert _marked([(b"vary", b"*")], None) == [(b"vary", b"*")]


# -- config ---------------------------------------------------------------------------------------


def route(compress: Any) -> dict[str, Any]:
    return {
        "pools": {"web": {"backends": ["http://127.0.0.1:9001"]}},
        "routes": [{"pool": "web", "compress": compress}],
    }


def problems_of(source: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return info.value.problems


def test_compress_true_takes_the_defaults_and_false_is_off() -> None:
    assert load_config(route(True)).routes[0].compress == CompressConfig()
    assert load_config(route(False)).routes[0].compress is None
    default = CompressConfig()
    assert default.min_bytes == 1024 and default.encodings == ("zstd", "br", "gzip")
    assert "text/*" in default.types and "application/json" in default.types


def test_compress_section() -> None:
    config = load_config(
        route({"min_bytes": "2KiB", "types": ["Text/HTML", "image/*"], "encodings": ["GZIP", "br"]})
    )
    assert config.routes[0].compress == CompressConfig(
        min_bytes=2048, types=("text/html", "image/*"), encodings=("gzip", "br")
    )


@pytest.mark.parametrize(
    ("compress", "expected"),
    [
        (
            {"encodings": ["gzip", "deflate"]},
            "routes[0].compress.encodings[1]: expected one of zstd, br, gzip, got 'deflate'",
        ),
        ({"encodings": []}, "routes[0].compress.encodings: must name at least one of"),
        ({"encodings": ["br", "br"]}, "routes[0].compress.encodings[1]: 'br' is listed twice"),
        ({"encodings": "gzip"}, "routes[0].compress.encodings: expected a list, got"),
        ({"types": ["text/html; charset=utf-8"]}, "routes[0].compress.types[0]: expected a media"),
        ({"types": ["*/*"]}, "routes[0].compress.types[0]: expected a media type"),
        ({"min_bytes": -1}, "routes[0].compress.min_bytes:"),
        ({"level": 9}, "routes[0].compress.level: unknown key"),
        ("yes", "routes[0].compress: expected a mapping, true or false"),
    ],
)
def test_compress_problems(compress: Any, expected: str) -> None:
    found = problems_of(route(compress))
    assert any(line.startswith(expected) for line in found), found


async def test_a_streamed_response_goes_out_chunk_by_chunk() -> None:
    """Unknown length: each chunk is flushed, decodable on arrival; a known length is not."""
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    compression = Compression(CompressConfig(encodings=("gzip",)), Metrics())
    for length, flushed in ((None, True), (b"4096", False)):
        sent.clear()
        response = _Response(send, compression, "gzip", False, False)
        headers = [(b"content-type", b"application/json")]
        if length is not None:
            headers.append((b"content-length", length))
        await response.send({"type": "http.response.start", "status": 200, "headers": headers})
        await response.send(
            {"type": "http.response.body", "body": b"[1," * 1024, "more_body": True}
        )
        decoder = zlib.decompressobj(31)
        got = b"".join(decoder.decompress(m["body"]) for m in sent[1:])
        assert (got == b"[1," * 1024) is flushed
