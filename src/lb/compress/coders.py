"""The streaming encoders of the content codings lb offers: gzip (zlib), br (brotli) and zstd
(the standard library's `compression.zstd` where present, Python 3.14+, else `zstandard`).

Each encoder takes the body chunk by chunk and holds no more than its coding's own window, so a
response of any length streams through in bounded memory. Levels are the fast end of each
library's range, as on-the-fly compressors use them: gzip 5, brotli 4, zstd 3.
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

GZIP_LEVEL = 5
BROTLI_QUALITY = 4
ZSTD_LEVEL = 3


class Encoder(Protocol):
    def compress(self, data: bytes) -> bytes:
        """Output so far: the coding may hold some input back until it has more."""

    def flush(self) -> bytes:
        """Everything given so far, decodable now (what SSE needs after each event)."""

    def finish(self) -> bytes:
        """The end of the stream."""


class GzipEncoder:
    __slots__ = ("_z",)

    def __init__(self) -> None:
        # wbits 31: a gzip header and trailer around deflate (RFC 1952).
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return self._z.compress(data)

    def flush(self) -> bytes:
        return self._z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


class BrotliEncoder:
    __slots__ = ("_b",)

    def __init__(self) -> None:
        # lgwin 22 (4 MiB) is brotli's default and what browsers expect; quality sets the cost.
        self._b: Any = brotli.Compressor(quality=BROTLI_QUALITY)

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

    def __init__(self) -> None:
        self._z: Any = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()

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

    def __init__(self) -> None:
        assert _stdlib_zstd is not None
        self._z: Any = _stdlib_zstd.ZstdCompressor(level=ZSTD_LEVEL)

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._z.compress(data)
        return out

    def flush(self) -> bytes:
        out: bytes = self._z.flush(self._z.FLUSH_BLOCK)
        return out

    def finish(self) -> bytes:
        out: bytes = self._z.flush(self._z.FLUSH_FRAME)
        return out


ENCODERS: Mapping[str, Callable[[], Encoder]] = {
    "gzip": GzipEncoder,
    "br": BrotliEncoder,
    "zstd": ZstdEncoder if _stdlib_zstd is None else StdlibZstdEncoder,
}
