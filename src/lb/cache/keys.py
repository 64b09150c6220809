"""Primary cache keys (RFC 9111 §2: method and target URI) and the URIs an unsafe request
invalidates (§4.4).

A primary key is `METHOD SP scheme "://" host target`, bytes: the host lower-cased without a
default port, the target (path and query) exactly as the client sent it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urljoin, urlsplit

_DEFAULT_PORTS = {"http": b":80", "https": b":443"}
_NOT_IN_HOST = re.compile(rb"[/?#@\\\s]")


def normalize_host(scheme: str, host: bytes) -> bytes | None:
    """The Host as a key part; None when it could not be part of a URI (lb then bypasses)."""
    host = host.strip().lower()
    if _NOT_IN_HOST.search(host) is not None:
        return None
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(default):
        host = host[: -len(default)]
    return host


def primary_key(method: str, scheme: str, host: bytes, target: bytes) -> bytes:
    return method.encode("ascii") + b" " + scheme.encode("ascii") + b"://" + host + target


def target_of(primary: bytes) -> bytes:
    """The request target part of a primary key."""
    rest = primary.partition(b"://")[2]
    slash = rest.find(b"/")
    return rest[slash:] if slash >= 0 else b""


def invalidated_targets(
    scheme: str, host: bytes, target: bytes, response_headers: Sequence[tuple[bytes, bytes]]
) -> list[bytes]:
    """The targets whose entries an unsafe request with a non-error response invalidates: its own,
    and those of Location and Content-Location when they share its origin (RFC 9111 §4.4)."""
    targets = [target]
    base = f"{scheme}://{host.decode('latin-1')}{target.decode('latin-1')}"
    for name, value in response_headers:
        if name != b"location" and name != b"content-location":
            continue
        try:
            parts = urlsplit(urljoin(base, value.decode("latin-1").strip()))
        except ValueError:
            continue
        other = normalize_host(parts.scheme, parts.netloc.encode("latin-1"))
        if parts.scheme != scheme or other != host:
            continue  # another origin: never invalidated from here (denial of service)
        found = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        encoded = found.encode("latin-1")
        if encoded not in targets:
            targets.append(encoded)
    return targets
