"""HTTP/1.1 message framing, sans-I/O: the request head and body framing, the response rules
llhttp cannot apply for us (it never learns the request method), and the backend's keep-alive
hints.

The head is written exactly as the caller built it (method, raw target, headers in order);
the only header ever added is `Transfer-Encoding: chunked`, for a streamed body whose length
the caller did not give, because without it the backend could not tell where the body ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Final, NamedTuple

import httpx

from lb.transport.errors import tag

LAST_CHUNK: Final = b"0\r\n\r\n"
# A connection the backend said it keeps N seconds is retired this much earlier (at most half of
# N): the backend's clock starts when it sent the response, ours when the response arrived.
KEEPALIVE_MARGIN: Final = 1.0
CHUNKED_HEADER: Final = b"Transfer-Encoding: chunked\r\n"

RawHeaders = Sequence[tuple[bytes, bytes]]


class Framing(NamedTuple):
    """How the request body is delimited: `Content-Length` (a length) or chunked, or neither."""

    content_length: int | None
    chunked: bool


def body_framing(headers: RawHeaders, request: httpx.Request | None = None) -> Framing:
    """Read the framing the caller's headers declare; refuse the ambiguous kinds.

    Both Content-Length and Transfer-Encoding, differing Content-Lengths, or a
    Transfer-Encoding that does not end in chunked would let the backend and any hop in
    between disagree about where the body ends (request smuggling), so none is sent.
    """
    length: bytes | None = None
    codings: list[bytes] = []
    for name, value in headers:
        # Compare lengths first: two of ~10 headers need the lower-casing.
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            value = value.strip()
            if length is not None and value != length:
                raise _refuse("differing Content-Length headers", request)
            length = value
        elif size == 17 and name.lower() == b"transfer-encoding":
            codings += (c.strip().lower() for c in value.split(b","))
    if codings:
        if length is not None:
            raise _refuse("both Content-Length and Transfer-Encoding", request)
        if codings[-1] != b"chunked":
            raise _refuse("Transfer-Encoding does not end in chunked", request)
        return Framing(None, True)
    if length is None:
        return Framing(None, False)
    if not length.isdigit():
        raise _refuse(f"invalid Content-Length {length!r}", request)
    return Framing(int(length), False)


def encode_head(
    method: bytes,
    target: bytes,
    headers: RawHeaders,
    *,
    add_chunked: bool = False,
    request: httpx.Request | None = None,
) -> bytes:
    """The request line and header section, byte for byte from the caller's values."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if add_chunked:
        parts.append(CHUNKED_HEADER)
    parts.append(b"\r\n")
    head = b"".join(parts)
    # httpx.Headers does not reject CR or LF, and a stray one would split a header into a
    # second one of the sender's choosing. One count over the whole head is cheaper than a
    # check per value: a clean head has exactly one CR and one LF per line.
    lines = len(headers) + 2 + add_chunked
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise _refuse("CR or LF inside the request line or a header", request)
    if not method or not target or b" " in target:
        raise _refuse("empty method or target, or a space in the target", request)
    return head


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (`data` must not be empty: that is the last chunk)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def frame_body(
    body: bytes, content_length: int | None, chunked: bool, request: httpx.Request | None
) -> tuple[bytes, bool]:
    """A whole body as written after the head, and whether the head must add chunked framing."""
    if chunked:
        return (encode_chunk(body) + LAST_CHUNK if body else LAST_CHUNK), False
    if content_length is not None:
        if len(body) != content_length:
            raise _refuse("request body does not match its Content-Length", request)
        return body, False
    if body:
        return encode_chunk(body) + LAST_CHUNK, True
    return b"", False


def persistent(version: str, headers: RawHeaders) -> bool:
    """Whether a response keeps its connection open (RFC 9112 9.3), from version and headers.

    For HEAD responses only: llhttp's own answer assumes a body without Content-Length runs
    to EOF, which is never the case after HEAD.
    """
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
    if b"close" in tokens:
        return False
    return version == "1.1" or b"keep-alive" in tokens


def ends_at_close(headers: RawHeaders) -> bool:
    """Whether a response body is delimited by the connection closing (RFC 9112 6.3 item 8).

    httptools has no way to tell llhttp about the EOF, so the connection decides: with no
    Content-Length and no chunked coding, EOF is the normal end of the body.
    """
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            return False
        if lowered == b"transfer-encoding" and value.rstrip().lower().endswith(b"chunked"):
            return False
    return True


def keepalive_limit(value: bytes) -> float | None:
    """How long a connection may stay idle after a response carrying `Keep-Alive: value`
    (e.g. `timeout=5, max=100`): the backend's timeout less a margin, None if it names none."""
    for param in value.split(b","):
        name, _, number = param.partition(b"=")
        if name.strip().lower() == b"timeout":
            number = number.strip().strip(b'"')
            if not number.isdigit():
                return None
            seconds = int(number)
            return max(seconds - KEEPALIVE_MARGIN, seconds / 2)
    return None


def faulty_framing(version: str, headers: RawHeaders) -> str | None:
    """Why a response's framing cannot be trusted, or None (RFC 9112 6.1, 6.3): the chunked
    coding twice (or not last), or any Transfer-Encoding on an HTTP/1.0 response. llhttp
    accepts both; relayed, the client and lb could disagree about where the body ends.

    Called only for responses that carry Transfer-Encoding (the connection notes it as the
    headers arrive), so the common response costs nothing here.
    """
    if version == "1.0":
        return "Transfer-Encoding in an HTTP/1.0 response"
    codings = [
        coding.strip().lower()
        for name, value in headers
        if name.lower() == b"transfer-encoding"
        for coding in value.split(b",")
    ]
    if codings.count(b"chunked") > 1:
        return "the chunked coding applied more than once"
    if b"chunked" in codings and codings[-1] != b"chunked":
        return "Transfer-Encoding with chunked not last"
    return None


def _refuse(reason: str, request: httpx.Request | None) -> httpx.LocalProtocolError:
    message = f"refusing to send the request: {reason}"
    return tag(httpx.LocalProtocolError(message, request=request), sent=False)


async def open_stream(
    body: AsyncIterable[bytes],
    content_length: int | None,
    chunked: bool,
    request: httpx.Request | None,
) -> tuple[bytes, bool, AsyncIterator[bytes] | None, int | None]:
    """Start iterating a streamed body: (the first write's payload, whether the head adds
    chunked framing, the iterator of the rest or None when there is no more, and the bytes
    still due by Content-Length, None when chunked)."""
    rest = body.__aiter__()
    first = await _next_chunk(rest)
    if first is None:
        payload, add_chunked = frame_body(b"", content_length, chunked, request)
        return payload, add_chunked, None, None
    if content_length is None:
        return encode_chunk(first), not chunked, rest, None
    remaining = content_length - len(first)
    if not remaining:
        # Complete: the stream must end now. Seeing it end (not abandoning it) keeps
        # httpcore's contract, which callers may hook (e.g. "body read").
        if await _next_chunk(rest) is not None:
            remaining = -1
        if remaining == 0:
            return first, False, None, None
    if remaining < 0:
        raise _refuse("request body longer than its Content-Length", request)
    return first, False, rest, remaining


async def _next_chunk(chunks: AsyncIterator[bytes]) -> bytes | None:
    """The next non-empty chunk, or None once the stream has ended."""
    async for chunk in chunks:
        if chunk:
            return chunk
    return None
