"""Header handling between client and backend: hop-by-hop removal, X-Forwarded-*, request IDs.

Header names from the ASGI server are lower-case bytes; values are passed on byte for byte.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence

from lb.config.model import HOP_BY_HOP_FIELDS, Network

Headers = list[tuple[bytes, bytes]]

# RFC 9110 7.6.1, plus the legacy Proxy-Connection (the config refuses them in route headers).
HOP_BY_HOP = frozenset(name.encode("ascii") for name in HOP_BY_HOP_FIELDS)

# Named in a request's Connection header, these still go to the backend: without Host or
# Content-Length it could not read the request at all.
_NEVER_DROPPED = frozenset({b"host", b"content-length"})

_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> bytes:
    # os.urandom, though it is a system call per request (getrandom, ~1 % of a proxied request):
    # the random module's generator is the process's to seed, and an app that seeds it alike in
    # every worker (tests, ML code) would make every worker draw the same ids.
    return os.urandom(16).hex().encode("ascii")


def valid_request_id(value: bytes) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


def _connection_tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def resolve_client(peer: str, xff: bytes | None, trusted: Sequence[Network]) -> tuple[str, bool]:
    """(the client IP, whether the peer is a trusted proxy): SPEC section 3's client IP, for
    proxied and admin requests alike. `xff` is every X-Forwarded-For value, comma-joined."""
    if not trusted or not is_trusted(peer, trusted):
        return peer, False
    return client_ip(peer, xff, trusted), True


def client_ip(peer: str, xff: bytes | None, trusted: Sequence[Network]) -> str:
    """The peer address; from a trusted peer, the rightmost X-Forwarded-For hop not trusted."""
    if not trusted or xff is None or not is_trusted(peer, trusted):
        return peer
    for hop in reversed(xff.split(b",")):
        address = hop.strip().decode("latin-1")
        if not address:
            continue
        if not is_trusted(address, trusted):
            try:
                return str(ipaddress.ip_address(address))
            except ValueError:
                return peer  # garbage in the header: believe nothing of it
    return peer


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def upstream_request_headers(
    headers: Sequence[tuple[bytes, bytes]],
    *,
    peer: str,
    scheme: str,
    request_id: bytes,
    host: bytes | None,
    fallback_host: bytes,
    peer_trusted: bool,
) -> Headers:
    """The headers to send to the backend.

    `host` replaces the client's Host (preserve_host off); None keeps it, and `fallback_host` stands
    in when the client sent none (HTTP/1.0). Chunked request framing is re-declared because
    Transfer-Encoding itself is hop-by-hop.
    """
    out: Headers = []
    drop: set[bytes] | None = None
    xff: bytes | None = None
    client_host = b""
    chunked = False
    has_length = False
    forwarded_proto: bytes | None = None
    forwarded_host: bytes | None = None
    for name, value in headers:
        if name in HOP_BY_HOP:
            if name == b"connection":
                drop = (drop or set()) | _connection_tokens(value)
            elif name == b"transfer-encoding":
                chunked = True
            continue
        if name == b"x-forwarded-for":
            xff = value if xff is None else xff + b", " + value
            continue
        if name == b"x-request-id":
            continue
        if name == b"host":
            client_host = value
            if host is not None or not value:  # an empty Host: the fallback stands in
                continue
        elif name == b"content-length":
            has_length = True
        elif name == b"x-forwarded-proto":
            if peer_trusted:
                forwarded_proto = value
            continue
        elif name == b"x-forwarded-host":
            if peer_trusted:
                forwarded_host = value
            continue
        out.append((name, value))
    if drop:
        # Connection may not take away what the backend needs to read the request.
        drop -= _NEVER_DROPPED
        out = [(n, v) for n, v in out if n not in drop]
    if host is not None:
        out.append((b"host", host))
    elif not client_host:
        out.append((b"host", fallback_host))
    peer_bytes = peer.encode("latin-1")
    out.append((b"x-forwarded-for", peer_bytes if xff is None else xff + b", " + peer_bytes))
    out.append((b"x-forwarded-proto", forwarded_proto or scheme.encode("latin-1")))
    if forwarded_host or client_host:
        out.append((b"x-forwarded-host", forwarded_host or client_host))
    out.append((b"x-request-id", request_id))
    if chunked and not has_length:
        out.append((b"transfer-encoding", b"chunked"))
    return out


def downstream_response_headers(
    headers: Sequence[tuple[bytes, bytes]], request_id: bytes
) -> Headers:
    """The backend's response headers for the client: hop-by-hop gone, our X-Request-ID added."""
    out: Headers = []
    drop: set[bytes] | None = None
    for name, value in headers:
        name = name.lower()
        if name in HOP_BY_HOP:
            # "Connection: keep-alive" (or close), as most backends send, names nothing more to
            # drop: no token set, and no second pass over the list.
            if name == b"connection" and value.lower() not in _PLAIN_CONNECTION:
                drop = (drop or set()) | _connection_tokens(value)
            continue
        if name == b"x-request-id":
            continue
        out.append((name, value))
    if drop:
        out = [(n, v) for n, v in out if n not in drop]
    out.append((b"x-request-id", request_id))
    return out
