"""The two steps of a route's compression, on either side of the cache.

`Negotiate` (before the cache) reduces the request's Accept-Encoding to the one coding lb chose
for it, or `identity`. The cache keys its Vary variants on that value, so there is one variant per
coding and not one per spelling of the header, and the backend is asked for that coding only.
`Compress` (after the cache, in front of the proxy) encodes the responses the backend left
uncompressed, streaming, and marks them: Content-Encoding, `Vary: Accept-Encoding`, a weak ETag,
no Content-Length. The cache then stores what the client gets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lb.compress.coders import ENCODERS, Encoder
from lb.compress.negotiate import Negotiator
from lb.config.model import CompressConfig
from lb.proxy.context import SCOPE_KEY
from lb.types import Handler, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from lb.metrics import Metrics

_IDENTITY = b"identity"
_VARY = (b"vary", b"Accept-Encoding")
_NO_BODY = frozenset({204, 206, 304})  # nothing to encode, or a part of another encoding
_MEMO_SIZE = 256


class Compression:
    """One route's `compress` config made live: negotiation, the media-type test, metrics."""

    __slots__ = ("config", "negotiate", "min_bytes", "_exact", "_prefixes", "_types", "metrics")

    def __init__(self, config: CompressConfig, metrics: Metrics) -> None:
        self.config = config
        self.negotiate = Negotiator(config.encodings)
        self.min_bytes = config.min_bytes
        self._exact = frozenset(t for t in config.types if not t.endswith("/*"))
        self._prefixes = tuple(t[:-1] for t in config.types if t.endswith("/*"))
        self._types: dict[bytes, bool] = {}  # Content-Type values seen, memoised
        self.metrics = metrics

    def __repr__(self) -> str:
        c = self.config
        return f"<Compression {', '.join(c.encodings)} min_bytes={c.min_bytes}>"

    def compressible(self, content_type: bytes) -> bool:
        memo = self._types
        found = memo.get(content_type)
        if found is None:
            media = content_type.partition(b";")[0].strip().lower().decode("latin-1")
            found = media in self._exact or media.startswith(self._prefixes)
            if len(memo) >= _MEMO_SIZE:  # backends send few distinct values; bound the rest
                memo.clear()
            memo[content_type] = found
        return found


class Negotiate:
    """Before the cache: the request's Accept-Encoding becomes the chosen coding's name."""

    __slots__ = ("inner", "compression")

    def __init__(self, inner: Handler, compression: Compression) -> None:
        self.inner = inner
        self.compression = compression

    def __repr__(self) -> str:
        return f"<Negotiate {self.compression!r} -> {self.inner!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        kept = [h for h in headers if h[0] != b"accept-encoding"]
        value = (
            b",".join(v for n, v in headers if n == b"accept-encoding")
            if len(kept) < len(headers)
            else None
        )
        coding = self.compression.negotiate(value)
        kept.append((b"accept-encoding", _IDENTITY if coding is None else coding.encode()))
        await self.inner({**scope, "headers": kept}, receive, send)


class Compress:
    """After the cache: encodes the response by the coding the request's Accept-Encoding names."""

    __slots__ = ("inner", "compression")

    def __init__(self, inner: Handler, compression: Compression) -> None:
        self.inner = inner
        self.compression = compression

    def __repr__(self) -> str:
        return f"<Compress {self.compression!r} -> {self.inner!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        value: bytes | None = None
        ranged = False
        for name, v in scope["headers"]:
            if name == b"accept-encoding":
                value = v if value is None else value + b"," + v
            elif name == b"range":
                ranged = True  # a part is of the identity representation (RFC 9110 §14)
        coding = self.compression.negotiate(value)
        response = _Response(send, self.compression, coding, ranged, scope["method"] == "HEAD")
        await self.inner(scope, receive, response.send)
        if response.encoder is not None:
            scope[SCOPE_KEY].bytes_sent = response.bytes_out


class _Response:
    """One response on its way through `Compress`."""

    __slots__ = (
        "_send",
        "compression",
        "coding",
        "ranged",
        "head",
        "encoder",
        "stream",
        "bytes_in",
        "bytes_out",
    )

    def __init__(
        self, send: Send, compression: Compression, coding: str | None, ranged: bool, head: bool
    ) -> None:
        self._send = send
        self.compression = compression
        self.coding = coding
        self.ranged = ranged
        self.head = head
        self.encoder: Encoder | None = None
        self.stream = False  # every chunk goes out decodable at once
        self.bytes_in = 0
        self.bytes_out = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message = self._start(message)
        elif message["type"] == "http.response.body" and self.encoder is not None:
            encoded = self._body(message)
            if encoded is None:
                return
            message = encoded
        await self._send(message)

    def _start(self, message: Message) -> Message:
        status: int = message["status"]
        headers: list[tuple[bytes, bytes]] = message["headers"]
        if status < 200 or status in _NO_BODY:
            if status == 304 and self.coding is not None:
                # The client's copy is what it would get now: this coding's, with its Vary
                # and weak ETag; the 304 updates it with the same fields (RFC 9111 §4.3.4).
                return {**message, "headers": _marked(headers, None)}
            return message
        content_type = length = None
        encoded = varies = False
        for name, value in headers:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name == b"content-encoding":
                encoded = value.strip().lower() != _IDENTITY
            elif name == b"vary":
                varies = True
            elif name == b"cache-control" and b"no-transform" in value.lower():
                return message  # RFC 9110 §7.7: no intermediary may change the content
        compression = self.compression
        if encoded or (content_type is not None and compression.compressible(content_type)):
            size = int(length) if length is not None and length.isdigit() else None
            if (
                self.coding is None
                or encoded
                or self.ranged
                or content_type is None
                or (size is not None and size < compression.min_bytes)
            ):
                # Left as it is, but it varies: most often with no Vary of its own to merge.
                marked = _marked(headers, None, weaken=False) if varies else [*headers, _VARY]
                return {**message, "headers": marked}
            if not self.head:
                self.encoder = ENCODERS[self.coding](size)
                # A response of unknown length is one the backend streams (SSE, a feed, a long
                # poll): each chunk goes out decodable as it comes, as the backend sent it. The
                # proxy's chunks are what one read brought, so a fast backend's are large and
                # the flushes few.
                self.stream = size is None
            return {**message, "headers": _marked(headers, self.coding.encode("ascii"))}
        return message

    def _body(self, message: Message) -> Message | None:
        encoder = self.encoder
        assert encoder is not None
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        self.bytes_in += len(body)
        out = encoder.compress(body) if body else b""
        if not more:
            out += encoder.finish()
            self.compression.metrics.traffic.compressed(
                self.coding or "", self.bytes_in, self.bytes_out + len(out)
            )
        elif self.stream and body:
            out += encoder.flush()
        elif not out:
            return None  # the coding holds it until it has more: nothing to write yet
        self.bytes_out += len(out)
        return {"type": "http.response.body", "body": out, "more_body": more}


def _marked(
    headers: list[tuple[bytes, bytes]], coding: bytes | None, weaken: bool = True
) -> list[tuple[bytes, bytes]]:
    """`headers` with Accept-Encoding in Vary; with `coding`, encoded by it: its name, a weak
    ETag (RFC 9110 §8.8.1: the bytes differ from the backend's), no length (chunked), no ranges."""
    out: list[tuple[bytes, bytes]] = []
    vary: list[bytes] = []
    for name, value in headers:
        if name == b"vary":
            vary.append(value)
        elif coding is not None and name in (b"content-length", b"accept-ranges"):
            continue
        elif weaken and name == b"etag" and not value.startswith(b"W/"):
            out.append((name, b"W/" + value))
        else:
            out.append((name, value))
    listed = {t.strip().lower() for v in vary for t in v.split(b",")}
    if b"*" not in listed and b"accept-encoding" not in listed:
        vary.append(b"Accept-Encoding")
    out.append((b"vary", b", ".join(vary)))
    if coding is not None:
        out.append((b"content-encoding", coding))
    return out
