"""A client's own conditional GET/HEAD answered from a stored response (RFC 9110 §13, RFC 9111
§4.3.2), and the conditional request lb sends to revalidate a stored response (RFC 9111 §4.3.1).
"""

from __future__ import annotations

from collections.abc import Sequence

from lb.cache.directives import STAR, http_date, parse_etags, weak_match

Headers = Sequence[tuple[bytes, bytes]]

# Preconditions meant for the origin (RFC 9111 §4.3.2), and If-Range: lb passes these requests
# through rather than answer them from a stored response.
PASS_THROUGH = frozenset({b"if-match", b"if-unmodified-since", b"if-range"})
# The client's conditionals lb evaluates itself, and removes from what it sends upstream.
CLIENT_CONDITIONALS = frozenset({b"if-none-match", b"if-modified-since"})


class Conditions:
    """If-None-Match / If-Modified-Since of a GET or HEAD request."""

    __slots__ = ("if_none_match", "if_modified_since")

    def __init__(self, if_none_match: tuple[bytes, ...] | None, if_modified_since: float | None):
        self.if_none_match = if_none_match
        self.if_modified_since = if_modified_since

    @classmethod
    def from_headers(cls, headers: Headers) -> Conditions | None:
        inm: list[bytes] = []
        ims: bytes | None = None
        for name, value in headers:
            if name == b"if-none-match":
                inm.append(value)
            elif name == b"if-modified-since":
                ims = value
        if not inm and ims is None:
            return None
        # An If-None-Match without one valid entity-tag (`abc`, unquoted) is ignored as the
        # invalid field it is. If-Modified-Since is ignored when If-None-Match is present (RFC
        # 9110 §13.1.3), or when it is not a valid date.
        tags = (parse_etags(inm) or None) if inm else None
        if tags is None and ims is None:
            return None
        return cls(tags, None if tags is not None else http_date(ims))


def not_modified(
    conditions: Conditions | None,
    etag: bytes | None,
    last_modified: float | None,
    date: float | None,
) -> bool:
    """Would the origin answer 304 for this representation (RFC 9110 §13.2.2 steps 3-4)?

    Without Last-Modified the stored Date stands in (RFC 9111 §4.3.2).
    """
    if conditions is None:
        return False
    tags = conditions.if_none_match
    if tags is not None:
        if tags == STAR:
            return True
        return etag is not None and any(weak_match(tag, etag) for tag in tags)
    since = conditions.if_modified_since
    if since is None:
        return False
    modified = last_modified if last_modified is not None else date
    return modified is not None and modified <= since


# RFC 9110 §15.4.5: what a 304 carries of the 200 it stands for.
_NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
)


def not_modified_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    has_etag = any(name == b"etag" for name, _ in headers)
    return [
        (n, v)
        for n, v in headers
        if n in _NOT_MODIFIED_FIELDS or (n == b"last-modified" and not has_etag)
    ]


def validation_headers(
    headers: Headers, etag: bytes | None, last_modified: bytes | None
) -> list[tuple[bytes, bytes]]:
    """The request headers for revalidating a stored response: the client's own conditionals
    replaced by the stored validators (RFC 9111 §4.3.1)."""
    out = [(n, v) for n, v in headers if n not in CLIENT_CONDITIONALS]
    if etag is not None:
        out.append((b"if-none-match", etag))
    if last_modified is not None:
        out.append((b"if-modified-since", last_modified))
    return out
