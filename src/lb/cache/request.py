"""`CacheRequest`: what the cache needs to know about one GET or HEAD request, read in one pass
over its headers."""

from __future__ import annotations

from lb.cache.conditional import CLIENT_CONDITIONALS, PASS_THROUGH, Conditions
from lb.cache.keys import normalize_host, primary_key
from lb.cache.rules import RequestDirectives
from lb.types import Scope

_NO_DIRECTIVES = RequestDirectives({})  # never mutated: shared by requests without Cache-Control
# Clients send few distinct Cache-Control/Pragma values ("no-cache", "max-age=0"): each cache keeps
# the parsed directives of up to this many, so a request with one usually costs a dict lookup.
DIRECTIVES_MEMO_MAX = 256
DirectivesMemo = dict[tuple[tuple[bytes, bytes], ...], RequestDirectives]


class CacheRequest:
    __slots__ = (
        "method",
        "scheme",
        "host",
        "target",
        "primary",
        "lookup",
        "headers",
        "directives",
        "conditions",
        "authorization",
        "range",
    )

    def __init__(
        self,
        method: str,
        scheme: str,
        host: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        directives: RequestDirectives,
        conditions: Conditions | None,
        authorization: bool,
        range_: bytes | None = None,
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.host = host
        self.target = target
        self.headers = headers
        self.directives = directives
        self.conditions = conditions
        self.authorization = authorization
        # Range of a GET, served from a stored complete response (HEAD ignores Range, §14.2).
        self.range = range_ if method == "GET" else None
        self.primary = primary_key(method, scheme, host, target)
        # A stored GET response also answers HEAD (RFC 9110 §9.3.2); it is looked up first.
        self.lookup = (
            (primary_key("GET", scheme, host, target), self.primary)
            if method == "HEAD"
            else (self.primary,)
        )

    def __repr__(self) -> str:
        return f"<CacheRequest {self.primary!r}>"

    def as_get(self) -> CacheRequest:
        """The same request as a GET: how a stored GET response found for a HEAD is refreshed
        in the background, so that the refresh can replace it."""
        return CacheRequest(
            "GET",
            self.scheme,
            self.host,
            self.target,
            self.headers,
            self.directives,
            self.conditions,
            self.authorization,
        )

    @property
    def may_store(self) -> bool:
        return not self.directives.no_store

    @property
    def collapsible(self) -> bool:
        """Whether this request may wait for another's identical upstream request. Not with
        Authorization (its answer is most likely private) or no-store (it stores nothing)."""
        return not self.authorization and not self.directives.no_store


def cache_request(
    scope: Scope, method: str, target: bytes, memo: DirectivesMemo | None = None
) -> CacheRequest | None:
    """The request's cache view, or None when the cache must pass it through untouched: origin
    preconditions (If-Match, If-Unmodified-Since, If-Range), and a Host that cannot be part of a
    URI. `memo` keeps parsed request directives (RequestDirectives are never mutated, so requests
    may share them)."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    host = b""
    authorization = False
    directives = conditional = False
    range_: bytes | None = None
    for name, value in headers:
        if name == b"host":
            host = value
        elif name == b"authorization":
            authorization = True
        elif name == b"cache-control" or name == b"pragma":
            directives = True
        elif name in CLIENT_CONDITIONALS:
            conditional = True
        elif name == b"range":
            range_ = value
        elif name in PASS_THROUGH:
            return None
    scheme = scope.get("scheme", "http")
    normal = normalize_host(scheme, host)
    if normal is None:
        return None
    return CacheRequest(
        method,
        scheme,
        normal,
        target,
        headers,
        _directives(headers, memo) if directives else _NO_DIRECTIVES,
        Conditions.from_headers(headers) if conditional else None,
        authorization,
        range_,
    )


def _directives(
    headers: list[tuple[bytes, bytes]], memo: DirectivesMemo | None
) -> RequestDirectives:
    if memo is None:
        return RequestDirectives.from_headers(headers)
    key = tuple((n, v) for n, v in headers if n == b"cache-control" or n == b"pragma")
    parsed = memo.get(key)
    if parsed is None:
        if len(memo) >= DIRECTIVES_MEMO_MAX:
            memo.clear()  # a client cycling through values: start over rather than grow
        parsed = memo[key] = RequestDirectives.from_headers(headers)
    return parsed
