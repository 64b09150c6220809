"""The streaming encoders of the content codings lb offers: gzip (zlib), br (brotli) and zstd
(the standard library's `compression.zstd` where present, Python 3.14+, else `zstandard`).

Each encoder takes the body chunk by chunk and holds no more than its coding's own window, so a
response of any length streams through in bounded memory. A response's known length sizes the
window (and tells zstd the frame's size), as nginx does for gzip: a small response then needs less
memory and, for zstd, less than half the instructions. Levels are where each library spends about
what deflate's fast path does (~400k instructions on 10 KB of JSON, `bench/compress_bench.py`):
gzip 3, brotli 1, zstd 3 (docs/performance.md has the table of levels measured).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import brotli  # type: ignore[import-untyped]

try:  # Python 3.14+: no third-party package needed
    from compression import zstd as _stdlib_zstd  # type: ignore[import-not-found,unused-ignore]

    zstandard: Any = None
except ImportError:
    _stdlib_zstd = None
    import zstandard

GZIP_LEVEL = 3
BROTLI_QUALITY = 1
ZSTD_LEVEL = 3


def window_bits(size: int | None, largest: int) -> int:
    """The smallest window (log2) that holds `size` bytes whole, at most `largest`, at least 9;
    `largest` when the size is not known (nginx's rule for gzip, with deflate's 262-byte
    lookahead)."""
    bits = largest
    if size is not None:
        while bits > 9 and size < (1 << (bits - 1)) - 262:
            bits -= 1
    return bits


class Encoder(Protocol):
    def compress(self, data: bytes) -> bytes:
        """Output so far: the coding may hold some input back until it has more."""

    def flush(self) -> bytes:
        """Everything given so far, decodable now (what SSE needs after each event)."""

    def finish(self) -> bytes:
        """The end of the stream."""


class GzipEncoder:
    __slots__ = ("_z",)

    def __init__(self, size: int | None = None) -> None:
        bits = window_bits(size, 15)
        # 16 + bits: a gzip header and trailer around deflate (RFC 1952). The hash table
        # (memLevel) shrinks with the window, as in nginx.
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + bits, max(1, bits - 7))

    def compress(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def flush(self) -> bytes:
        return self._z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


class BrotliEncoder:
    __slots__ = ("_b",)

    def __init__(self, size: int | None = None) -> None:
        # brotli's default window is 4 MiB (lgwin 22); it needs no more than the response.
        lgwin = max(10, window_bits(size, 22))
        self._b: Any = brotli.Compressor(quality=BROTLI_QUALITY, lgwin=lgwin)

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._b.process(data)
        return out

    def flush(self) -> bytes:
        out: bytes = self._b.flush()
        return out

    def finish(self) -> bytes:
        out: bytes = self._b.finish()
        return out


class ZstdEncoder:
    __slots__ = ("_z",)

    def __init__(self, size: int | None = None) -> None:
        # The size (exact: a response shorter than its Content-Length never reaches finish())
        # goes in the frame header and lets zstd choose parameters for that size.
        self._z: Any = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj(
            size=-1 if size is None else size
        )

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._z.compress(data)
        return out

    def flush(self) -> bytes:
        out: bytes = self._z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return out

    def finish(self) -> bytes:
        out: bytes = self._z.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
        return out


class StdlibZstdEncoder:
    __slots__ = ("_z",)

    def __init__(self, size: int | None = None) -> None:
        assert _stdlib_zstd is not None
        self._z: Any = _stdlib_zstd.ZstdCompressor(level=ZSTD_LEVEL)
        if size is not None:
            self._z.set_pledged_input_size(size)

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._z.compress(data)
        return out

    def flush(self) -> bytes:
        out: bytes = self._z.flush(self._z.FLUSH_BLOCK)
        return out

    def finish(self) -> bytes:
        out: bytes = self._z.flush(self._z.FLUSH_FRAME)
        return out


ENCODERS: Mapping[str, Callable[[int | None], Encoder]] = {
    "gzip": GzipEncoder,
    "br": BrotliEncoder,
    "zstd": ZstdEncoder if _stdlib_zstd is None else StdlibZstdEncoder,
}
