"""The caching rules of RFC 9111 for a shared cache, as pure functions over parsed headers.

Storability (§3, §3.5), freshness lifetime (§4.2.1) with heuristics (§4.2.2) only when
configured, Age (§4.2.3), request directives (§5.2.1) and the decision to reuse, serve stale or
revalidate a stored response (§4, §4.2.4, RFC 5861). No I/O and no clock: times come in as numbers.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from lb.cache.directives import (
    CONFLICT,
    MAX_DELTA,
    Directives,
    argument_names,
    delta_seconds,
    entity_tag,
    field_names,
    first_delta,
    http_date,
    parse_cache_control,
)
from lb.cache.targeted import select_directives

Headers = Sequence[tuple[bytes, bytes]]

# RFC 9110 §15.1: status codes a response may be stored for without explicit freshness.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# Status codes whose caching requirements lb implements (RFC 9111 §5.2.2.3, must-understand).
UNDERSTOOD_STATUSES = frozenset(HEURISTIC_STATUSES - {206} | {302, 303, 307})
# RFC 5861 §4: what counts as an error for stale-if-error.
ERROR_STATUSES = frozenset({500, 502, 503, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# RFC 9111 §4.2.2's typical heuristic: a tenth of the time since Last-Modified, capped so that a
# file untouched for years is still revalidated daily.
HEURISTIC_FRACTION = 0.1
HEURISTIC_MAX = 86400.0


class RequestDirectives:
    """What the client asked of the cache (RFC 9111 §5.2.1, Pragma §5.4)."""

    __slots__ = (
        "no_cache",
        "no_store",
        "max_age",
        "max_stale",
        "min_fresh",
        "only_if_cached",
        "stale_if_error",
    )

    def __init__(self, cc: Directives, pragma_no_cache: bool = False) -> None:
        # Pragma counts only when the request has no Cache-Control at all (§5.4).
        self.no_cache = "no-cache" in cc or (pragma_no_cache and not cc)
        self.no_store = "no-store" in cc
        self.max_age = delta_seconds(cc.get("max-age"))
        stale = cc.get("max-stale", CONFLICT)
        # max-stale without an argument accepts any staleness (§5.2.1.2); an invalid one is ignored.
        self.max_stale: float | None = (
            float(MAX_DELTA) if "max-stale" in cc and stale is None else delta_seconds(stale)
        )
        self.min_fresh = delta_seconds(cc.get("min-fresh"))
        self.only_if_cached = "only-if-cached" in cc
        self.stale_if_error = delta_seconds(cc.get("stale-if-error"))

    @classmethod
    def from_headers(cls, headers: Headers) -> RequestDirectives:
        lines = [v for n, v in headers if n == b"cache-control"]
        pragma = any(b"no-cache" in v.lower() for n, v in headers if n == b"pragma")
        return cls(parse_cache_control(lines), pragma)


class ResponseInfo:
    """The header fields of a response that caching reads, parsed once.

    `targeted` lists targeted cache-control fields (RFC 9213, lower-case names) honoured before
    Cache-Control: the first valid one replaces Cache-Control and Expires; `cc_field` names it
    ("" when Cache-Control decides).
    """

    __slots__ = (
        "cc",
        "cc_field",
        "date",
        "expires",
        "age",
        "etag",
        "last_modified",
        "vary",
        "set_cookie",
    )

    def __init__(self, headers: Headers, targeted: Sequence[str] = ()) -> None:
        cc_lines = []
        date = expires = age = etag = last_modified = None
        expires_count = 0
        vary: list[bytes] = []
        set_cookie = False
        for name, value in headers:
            if name == b"cache-control":
                cc_lines.append(value)
            elif name == b"date":
                date = value
            elif name == b"expires":
                expires = value
                expires_count += 1
            elif name == b"age":
                if age is None:  # the first line, as the first value, counts (§5.1)
                    age = value
            elif name == b"etag":
                etag = entity_tag(value)
            elif name == b"last-modified":
                last_modified = value
            elif name == b"vary":
                vary.append(value)
            elif name == b"set-cookie":
                set_cookie = True
        chosen = select_directives(headers, targeted) if targeted else None
        if chosen is not None:
            self.cc_field, self.cc = chosen
            expires = None  # RFC 9213 §2.1: Expires is ignored along with Cache-Control
        else:
            self.cc_field = ""
            self.cc = parse_cache_control(cc_lines)
        self.date = http_date(date)
        # Two Expires lines, or an invalid one ("0", "... UTC"), mean already expired (§5.3).
        self.expires: float | None = (
            None if expires is None else (http_date(expires) if expires_count == 1 else None)
        )
        if expires is not None and self.expires is None:
            self.expires = float("-inf")
        self.age = float(first_delta(age) or 0)
        self.etag = etag
        self.last_modified = http_date(last_modified)
        self.vary = field_names(vary)
        self.set_cookie = set_cookie


def explicit_lifetime(info: ResponseInfo, response_time: float) -> float | None:
    """Freshness from the response itself, shared-cache order s-maxage > max-age > Expires
    (RFC 9111 §4.2.1); None when it carries none. Invalid values count as already stale."""
    cc = info.cc
    for name in ("s-maxage", "max-age"):
        if name in cc:
            seconds = delta_seconds(cc[name])
            return 0.0 if seconds is None else float(seconds)
    if info.expires is not None:
        date = info.date if info.date is not None else response_time
        return max(0.0, info.expires - date)
    return None


def freshness_lifetime(
    info: ResponseInfo,
    status: int,
    response_time: float,
    default_ttl: float,
    *,
    heuristic: bool = False,
) -> float | None:
    """Explicit freshness, else a heuristic (RFC 9111 §4.2.2) for status codes that allow one (or
    `public`): with `heuristic`, 10 % of the time since Last-Modified, at most HEURISTIC_MAX;
    else `default_ttl`. None when the response has no freshness at all."""
    explicit = explicit_lifetime(info, response_time)
    if explicit is not None:
        return explicit
    if status not in HEURISTIC_STATUSES and "public" not in info.cc:
        return None
    if heuristic and info.last_modified is not None:
        date = info.date if info.date is not None else response_time
        guess = min(HEURISTIC_FRACTION * (date - info.last_modified), HEURISTIC_MAX)
        if guess > 0:
            return guess
    if default_ttl > 0:
        return default_ttl
    return None


def storable(
    status: int,
    info: ResponseInfo,
    request: RequestDirectives,
    *,
    authorization: bool,
    lifetime: float | None,
    store_set_cookie: bool = False,
) -> bool:
    """May a shared cache store this response to a GET or HEAD (RFC 9111 §3)?

    `lifetime` is `freshness_lifetime(...)`; None (no freshness, `default_ttl: 0`) is not stored.
    """
    cc = info.cc
    if status < 200 or status in (206, 304):
        return False  # not final, or a partial/validation response lb does not store
    if "must-understand" in cc:
        # §5.2.2.3: only a cache that implements the status code may store; it ignores no-store.
        if status not in UNDERSTOOD_STATUSES:
            return False
    elif "no-store" in cc:
        return False
    if request.no_store:
        return False
    if "private" in cc and not argument_names(cc["private"]):
        return False  # private="field" only keeps those fields out (see `stored_headers`)
    shared_ok = "public" in cc or "s-maxage" in cc
    if authorization and not (shared_ok or "must-revalidate" in cc):
        return False  # §3.5
    if info.set_cookie and not (shared_ok or store_set_cookie):
        # lb's choice (storing is never required): a Set-Cookie response is shared only when the
        # origin says it is meant for shared caches, so one user's cookie never reaches another;
        # `cache.store_set_cookie: true` stores them as RFC 9111 permits.
        return False
    if "*" in info.vary:
        return False  # never matches a later request (§4.1)
    if lifetime is None:
        return False
    swr = delta_seconds(cc.get("stale-while-revalidate")) or 0
    sie = delta_seconds(cc.get("stale-if-error")) or 0
    # An entry that is never fresh, cannot be revalidated and may not be served stale is useless.
    return lifetime > 0 or info.etag is not None or info.last_modified is not None or swr + sie > 0


def initial_age(info: ResponseInfo, request_time: float, response_time: float) -> float:
    """corrected_initial_age of RFC 9111 §4.2.3."""
    date = info.date if info.date is not None else response_time
    apparent_age = max(0.0, response_time - date)
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = info.age + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(corrected_initial_age: float, response_time: float, now: float) -> float:
    """current_age of RFC 9111 §4.2.3: the initial age plus the time the entry has been resident."""
    return corrected_initial_age + max(0.0, now - response_time)


def age_header(age: float) -> bytes:
    """The Age value to send (§5.1): whole seconds, capped at 2^31."""
    return str(min(int(age), MAX_DELTA)).encode("ascii")


class Policy:
    """What a stored response's own directives allow once it is stored."""

    __slots__ = ("lifetime", "no_cache", "strict", "implied_strict", "swr", "sie")

    def __init__(self, cc: Directives, lifetime: float) -> None:
        self.lifetime = lifetime
        # Qualified no-cache="field" is handled as the unqualified form (§5.2.2.4 allows it).
        self.no_cache = "no-cache" in cc
        # Explicitly no stale serving at all (§5.2.2.2, §5.2.2.8).
        self.strict = "must-revalidate" in cc or "proxy-revalidate" in cc or self.no_cache
        # s-maxage carries proxy-revalidate's semantics (§5.2.2.10): no stale serving on the
        # client's say-so (max-stale); the origin's own stale-* directives in the same response
        # still count, since it sent both on purpose.
        self.implied_strict = "s-maxage" in cc
        self.swr = float(delta_seconds(cc.get("stale-while-revalidate")) or 0)
        self.sie = delta_seconds(cc.get("stale-if-error"))


class Reuse(enum.Enum):
    FRESH = "fresh"  # serve as is (HIT)
    STALE = "stale"  # the client accepts it stale (max-stale): serve (STALE)
    STALE_WHILE_REVALIDATE = "swr"  # serve (STALE) and refresh in the background
    REVALIDATE = "revalidate"  # ask upstream first (conditional request)


def reuse(policy: Policy, age: float, request: RequestDirectives) -> Reuse:
    """How a stored response may answer this request (RFC 9111 §4, §4.2.4, §5.2.1; RFC 5861 §3)."""
    if request.no_cache or policy.no_cache:
        return Reuse.REVALIDATE
    if request.max_age is not None and age > request.max_age:
        return Reuse.REVALIDATE
    lifetime = policy.lifetime
    if lifetime > age:
        if request.min_fresh is not None and lifetime - age < request.min_fresh:
            return Reuse.REVALIDATE
        return Reuse.FRESH
    staleness = age - lifetime
    if policy.strict:
        return Reuse.REVALIDATE
    if (
        request.max_stale is not None
        and not policy.implied_strict
        and staleness <= request.max_stale
        and request.min_fresh is None
    ):
        return Reuse.STALE
    if policy.swr and staleness <= policy.swr:
        return Reuse.STALE_WHILE_REVALIDATE
    return Reuse.REVALIDATE


def stale_on_error(policy: Policy, age: float, request: RequestDirectives) -> bool:
    """May the stored response stand in for an error answer (RFC 5861 §4, RFC 9111 §4.2.4)?"""
    if policy.strict:
        return False
    allowed = [s for s in (policy.sie, request.stale_if_error) if s is not None]
    return bool(allowed) and age - policy.lifetime <= max(allowed)


# RFC 9111 §3.1: fields never stored; plus lb's own per-response fields, added when serving.
_NOT_STORED = frozenset(
    {
        b"proxy-authenticate",
        b"proxy-authentication-info",
        b"proxy-authorization",
        b"age",
        b"x-request-id",
        b"x-cache",
    }
)


def stored_headers(headers: Headers, cc: Directives) -> list[tuple[bytes, bytes]]:
    """The response header fields to store (RFC 9111 §3.1): without the fields a qualified
    private="..." (§5.2.2.7) or no-cache="..." (§5.2.2.4) names, the proxy-specific ones, and the
    per-response ones lb sets on every answer (Age, X-Request-ID, X-Cache)."""
    drop = set(_NOT_STORED)
    for name in ("private", "no-cache"):
        if name in cc:
            drop.update(n.encode("latin-1") for n in argument_names(cc[name]))
    return [(n, v) for n, v in headers if n not in drop]


# RFC 9111 §3.2: Content-Length is never updated from a 304; Content-Encoding is kept since the
# stored body is in that coding.
_NOT_UPDATED = frozenset({b"content-length", b"content-encoding", b"transfer-encoding"})


def updated_headers(stored: Headers, fresh: Headers) -> list[tuple[bytes, bytes]]:
    """Stored fields updated from a 304 (RFC 9111 §3.2, §4.3.4): each field the 304 carries
    replaces all stored lines of that name."""
    new = [(n, v) for n, v in stored_headers(fresh, {}) if n not in _NOT_UPDATED]
    replaced = {n for n, _ in new}
    return [(n, v) for n, v in stored if n not in replaced] + new
