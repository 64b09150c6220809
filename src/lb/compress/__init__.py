"""Compression of responses a route's backend left uncompressed (SPEC section 12, `compress`).

Vocabulary:
    coding      a content coding lb can encode with: zstd, br or gzip (`coders`)
    negotiate   choose the coding for a request from its Accept-Encoding weights and the route's
                order of preference (`negotiate`)
    compressible  a response lb may encode: no Content-Encoding of its own, a listed media type,
                at least `min_bytes` when its length is known, no `no-transform`

Modules: `negotiate` (sans I/O), `coders` (streaming encoders), `layer` (`Negotiate` before the
cache, `Compress` after it, and `Compression`, one route's config made live).
"""

from lb.compress.layer import Compress, Compression, Negotiate

__all__ = ["Compress", "Compression", "Negotiate"]
