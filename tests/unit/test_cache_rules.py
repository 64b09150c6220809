"""RFC 9111 (and RFC 9110 §13) rules of the cache as pure functions, table-driven.

Each case's id starts with the section it checks: `9111-4.2.1-...` is RFC 9111 section 4.2.1,
`9110-13.1.2-...` RFC 9110, `5861-...` RFC 5861, and `lb-...` a documented choice of lb's where the
RFCs leave one open.
"""

from __future__ import annotations

import pytest

from lb.cache.conditional import (
    Conditions,
    not_modified,
    not_modified_headers,
    validation_headers,
)
from lb.cache.directives import (
    CONFLICT,
    MAX_DELTA,
    STAR,
    argument_names,
    delta_seconds,
    format_http_date,
    http_date,
    parse_cache_control,
    parse_etags,
)
from lb.cache.keys import invalidated_targets, normalize_host, primary_key, target_of
from lb.cache.rules import (
    Policy,
    RequestDirectives,
    ResponseInfo,
    Reuse,
    age_header,
    current_age,
    explicit_lifetime,
    freshness_lifetime,
    initial_age,
    reuse,
    stale_on_error,
    storable,
    stored_headers,
    updated_headers,
)
from lb.cache.vary import ABSENT, normalize, secondary_key

NOW = 1_700_000_000.0  # the fake clock: every time below is relative to it
DATE = format_http_date(NOW)


def H(*pairs: str) -> list[tuple[bytes, bytes]]:
    """Header list from "name: value" strings (names lower-cased as ASGI gives them)."""
    out = []
    for pair in pairs:
        name, _, value = pair.partition(":")
        out.append((name.strip().lower().encode(), value.strip().encode()))
    return out


def req(*pairs: str) -> RequestDirectives:
    return RequestDirectives.from_headers(H(*pairs))


def cases(table: list[tuple[object, ...]]) -> list[object]:
    """pytest params from rows whose first item is the case id."""
    return [pytest.param(*row[1:], id=str(row[0])) for row in table]


EXPIRES_60 = "expires: " + format_http_date(NOW + 60).decode()
DATE_NOW = "date: " + DATE.decode()
AUTH = ["authorization: Bearer x"]

# -- storability (RFC 9111 §3, §3.5, §5.2) -------------------------------------------------------

# fmt: off
STORABLE = [
    # id, status, response headers, request headers, default_ttl, stored?
    ("9111-3-max-age-stored", 200, ["cache-control: max-age=60"], [], 0, True),
    ("9111-3-expires-stored", 200, [EXPIRES_60, DATE_NOW], [], 0, True),
    ("9111-3-s-maxage-stored", 200, ["cache-control: s-maxage=60"], [], 0, True),
    ("9111-3-no-store-response-not-stored", 200, ["cache-control: no-store, max-age=60"], [], 0,
     False),
    ("9111-5.2.1.5-no-store-request-not-stored", 200, ["cache-control: max-age=60"],
     ["cache-control: no-store"], 0, False),
    ("9111-5.2.2.7-private-not-stored-by-shared-cache", 200,
     ["cache-control: private, max-age=60"], [], 0, False),
    ("9111-5.2.2.7-qualified-private-stored-without-the-field", 200,
     ['cache-control: private="set-cookie", max-age=60'], [], 0, True),
    ("9111-3-206-not-stored", 206, ["cache-control: max-age=60"], [], 0, False),
    ("9111-3-304-not-stored", 304, ["cache-control: max-age=60"], [], 0, False),
    ("9111-3-non-final-not-stored", 101, ["cache-control: max-age=60"], [], 0, False),
    ("9111-3.5-authorization-not-stored", 200, ["cache-control: max-age=60"], AUTH, 0, False),
    ("9111-3.5-authorization-public-stored", 200, ["cache-control: public, max-age=60"], AUTH, 0,
     True),
    ("9111-3.5-authorization-s-maxage-stored", 200, ["cache-control: s-maxage=60"], AUTH, 0, True),
    ("9111-3.5-authorization-must-revalidate-stored", 200,
     ["cache-control: must-revalidate, max-age=60"], AUTH, 0, True),
    ("9111-4.2.2-no-freshness-default-ttl-0-not-stored", 200, [], [], 0, False),
    ("9111-4.2.2-heuristic-default-ttl-stored", 200, [], [], 30, True),
    ("9111-4.2.2-heuristic-404-stored", 404, [], [], 30, True),
    ("9111-4.2.2-201-not-heuristically-cacheable", 201, [], [], 30, False),
    ("9111-4.2.2-public-makes-any-status-heuristic", 201, ["cache-control: public"], [], 30, True),
    ("9111-3-explicit-freshness-any-final-status", 201, ["cache-control: max-age=60"], [], 0,
     True),
    ("9111-5.2.2.3-must-understand-known-status-ignores-no-store", 200,
     ["cache-control: must-understand, no-store, max-age=60"], [], 0, True),
    ("9111-5.2.2.3-must-understand-unknown-status-not-stored", 299,
     ["cache-control: must-understand, no-store, max-age=60"], [], 0, False),
    ("9111-4.1-vary-star-never-matches-not-stored", 200,
     ["cache-control: max-age=60", "vary: *"], [], 0, False),
    ("lb-set-cookie-needs-public-or-s-maxage", 200,
     ["cache-control: max-age=60", "set-cookie: s=1"], [], 0, False),
    ("lb-set-cookie-with-public-stored", 200,
     ["cache-control: public, max-age=60", "set-cookie: s=1"], [], 0, True),
    ("lb-never-fresh-without-validator-not-stored", 200, ["cache-control: max-age=0"], [], 0,
     False),
    ("9111-4.3-never-fresh-with-validator-stored-for-revalidation", 200,
     ["cache-control: max-age=0", 'etag: "a"'], [], 0, True),
    ("5861-3-never-fresh-with-swr-stored", 200,
     ["cache-control: max-age=0, stale-while-revalidate=30"], [], 0, True),
    ("9111-5.2.2.4-no-cache-without-freshness-default-ttl-0", 200,
     ["cache-control: no-cache", 'etag: "a"'], [], 0, False),
]
# fmt: on


@pytest.mark.parametrize(
    ("status", "response", "request_headers", "default_ttl", "expected"), cases(STORABLE)
)
def test_storable(
    status: int, response: list[str], request_headers: list[str], default_ttl: float, expected: bool
) -> None:
    info = ResponseInfo(H(*response))
    lifetime = freshness_lifetime(info, status, NOW, default_ttl)
    authorization = any(h.lower().startswith("authorization") for h in request_headers)
    directives = req(*request_headers)
    stored = storable(status, info, directives, authorization=authorization, lifetime=lifetime)
    assert stored is expected


# -- freshness lifetime (RFC 9111 §4.2.1, §5.3) --------------------------------------------------

# fmt: off
LIFETIME = [
    # id, response headers, lifetime (None: no explicit freshness)
    ("9111-4.2.1-s-maxage-beats-max-age", ["cache-control: max-age=100, s-maxage=10"], 10.0),
    ("9111-5.3-max-age-beats-expires", ["cache-control: max-age=100", EXPIRES_60, DATE_NOW],
     100.0),
    ("9111-4.2.1-expires-minus-date", [EXPIRES_60, DATE_NOW], 60.0),
    ("9111-4.2.1-expires-without-date-uses-response-time", [EXPIRES_60], 60.0),
    ("9111-5.3-invalid-expires-is-in-the-past", ["expires: 0"], 0.0),
    ("9111-4.2.1-two-expires-stale", [EXPIRES_60, EXPIRES_60], 0.0),
    ("9111-4.2.1-invalid-max-age-stale", ["cache-control: max-age=abc"], 0.0),
    ("9111-4.2.1-conflicting-max-age-stale",
     ["cache-control: max-age=10", "cache-control: max-age=20"], 0.0),
    ("9111-4.2.1-repeated-identical-max-age", ["cache-control: max-age=10, max-age=10"], 10.0),
    ("9111-5.2-quoted-argument-accepted", ['cache-control: max-age="60"'], 60.0),
    ("9111-5.2-directive-case-insensitive", ["cache-control: Max-Age=7"], 7.0),
    ("9111-1.2.2-delta-seconds-capped-at-2^31", ["cache-control: max-age=99999999999"],
     float(MAX_DELTA)),
    ("9111-4.2.1-invalid-s-maxage-wins-and-is-stale", ["cache-control: s-maxage=abc, max-age=60"],
     0.0),
    ("9111-4.2.1-no-explicit-freshness", [], None),
]
# fmt: on


@pytest.mark.parametrize(("response", "expected"), cases(LIFETIME))
def test_explicit_lifetime(response: list[str], expected: float | None) -> None:
    assert explicit_lifetime(ResponseInfo(H(*response)), NOW) == expected


def test_9111_4_2_2_heuristic_only_through_default_ttl() -> None:
    info = ResponseInfo(H("last-modified: " + format_http_date(NOW - 86400).decode()))
    assert freshness_lifetime(info, 200, NOW, 0) is None  # no Last-Modified 10% heuristic
    assert freshness_lifetime(info, 200, NOW, 12) == 12


# -- Age (RFC 9111 §4.2.3, §5.1) ------------------------------------------------------------------

# fmt: off
INITIAL_AGE = [
    # id, response headers, request_time, response_time, corrected initial age
    ("9111-4.2.3-response-delay-counts", [], NOW - 2, NOW, 2.0),
    ("9111-4.2.3-age-value-plus-response-delay", ["age: 30"], NOW - 1, NOW, 31.0),
    ("9111-4.2.3-apparent-age-from-date", ["date: " + format_http_date(NOW - 100).decode()], NOW,
     NOW, 100.0),
    ("9111-4.2.3-date-in-future-apparent-age-zero",
     ["date: " + format_http_date(NOW + 100).decode()], NOW, NOW, 0.0),
    ("9111-4.2.3-larger-of-apparent-and-corrected-age",
     ["date: " + format_http_date(NOW - 10).decode(), "age: 50"], NOW, NOW, 50.0),
    ("9111-5.1-invalid-age-ignored", ["age: banana"], NOW, NOW, 0.0),
]
# fmt: on


@pytest.mark.parametrize(
    ("response", "request_time", "response_time", "expected"), cases(INITIAL_AGE)
)
def test_initial_age(
    response: list[str], request_time: float, response_time: float, expected: float
) -> None:
    assert initial_age(ResponseInfo(H(*response)), request_time, response_time) == expected


def test_9111_4_2_3_current_age_adds_resident_time() -> None:
    assert current_age(5.0, NOW, NOW + 10) == 15.0
    assert current_age(5.0, NOW, NOW - 10) == 5.0  # a clock step back never makes it younger


@pytest.mark.parametrize(
    ("age", "expected"),
    cases(
        [
            ("9111-5.1-age-whole-seconds", 0.9, b"0"),
            ("9111-5.1-age-rounded-down", 61.5, b"61"),
            ("9111-5.1-age-capped-at-2^31", 1e12, str(MAX_DELTA).encode()),
        ]
    ),
)
def test_age_header(age: float, expected: bytes) -> None:
    assert age_header(age) == expected


# -- reuse: request directives and stale responses (RFC 9111 §4, §4.2.4, §5.2; RFC 5861) ---------


def policy(cc: str, lifetime: float) -> Policy:
    return Policy(parse_cache_control([cc.encode()]), lifetime)


CC = "cache-control: "

# fmt: off
REUSE = [
    # id, response Cache-Control, lifetime, age, request headers, decision
    ("9111-4.2-fresh-reused", "max-age=60", 60, 10, [], Reuse.FRESH),
    ("9111-4.2-age-equal-lifetime-is-stale", "max-age=60", 60, 60, [], Reuse.REVALIDATE),
    ("9111-5.2.1.4-request-no-cache-revalidates", "max-age=60", 60, 10, [CC + "no-cache"],
     Reuse.REVALIDATE),
    ("9111-5.4-pragma-no-cache-without-cache-control", "max-age=60", 60, 10, ["pragma: no-cache"],
     Reuse.REVALIDATE),
    ("9111-5.4-pragma-ignored-with-cache-control", "max-age=60", 60, 10,
     ["pragma: no-cache", CC + "max-stale"], Reuse.FRESH),
    ("9111-5.2.1.1-request-max-age-exceeded", "max-age=60", 60, 10, [CC + "max-age=5"],
     Reuse.REVALIDATE),
    ("9111-5.2.1.1-request-max-age-equal-ok", "max-age=60", 60, 10, [CC + "max-age=10"],
     Reuse.FRESH),
    ("9111-5.2.1.3-min-fresh-not-met", "max-age=60", 60, 40, [CC + "min-fresh=30"],
     Reuse.REVALIDATE),
    ("9111-5.2.1.3-min-fresh-met", "max-age=60", 60, 20, [CC + "min-fresh=30"], Reuse.FRESH),
    ("9111-5.2.1.2-max-stale-any", "max-age=60", 60, 1000, [CC + "max-stale"], Reuse.STALE),
    ("9111-5.2.1.2-max-stale-within", "max-age=60", 60, 70, [CC + "max-stale=10"], Reuse.STALE),
    ("9111-5.2.1.2-max-stale-beyond", "max-age=60", 60, 71, [CC + "max-stale=10"],
     Reuse.REVALIDATE),
    ("9111-5.2.2.2-must-revalidate-beats-max-stale", "max-age=60, must-revalidate", 60, 70,
     [CC + "max-stale"], Reuse.REVALIDATE),
    ("9111-5.2.2.8-proxy-revalidate-beats-max-stale", "max-age=60, proxy-revalidate", 60, 70,
     [CC + "max-stale"], Reuse.REVALIDATE),
    ("9111-5.2.2.10-s-maxage-implies-proxy-revalidate", "s-maxage=60", 60, 70,
     [CC + "max-stale"], Reuse.REVALIDATE),
    ("9111-5.2.2.4-response-no-cache-always-revalidates", "max-age=60, no-cache", 60, 1, [],
     Reuse.REVALIDATE),
    ("9111-5.2.2.4-qualified-no-cache-as-unqualified", 'max-age=60, no-cache="set-cookie"', 60, 1,
     [], Reuse.REVALIDATE),
    ("5861-3-swr-within-window", "max-age=60, stale-while-revalidate=30", 60, 90, [],
     Reuse.STALE_WHILE_REVALIDATE),
    ("5861-3-swr-beyond-window", "max-age=60, stale-while-revalidate=30", 60, 91, [],
     Reuse.REVALIDATE),
    ("9111-4.2.4-must-revalidate-forbids-swr",
     "max-age=60, stale-while-revalidate=30, must-revalidate", 60, 70, [], Reuse.REVALIDATE),
    ("lb-explicit-swr-with-s-maxage", "s-maxage=60, stale-while-revalidate=30", 60, 70, [],
     Reuse.STALE_WHILE_REVALIDATE),
    ("9111-5.2.1.4-request-no-cache-beats-swr", "max-age=60, stale-while-revalidate=30", 60, 70,
     [CC + "no-cache"], Reuse.REVALIDATE),
]

STALE_ON_ERROR = [
    # id, response Cache-Control (lifetime 60), age, request headers, may serve stale?
    ("5861-4-sie-within", "max-age=60, stale-if-error=30", 80, [], True),
    ("5861-4-sie-beyond", "max-age=60, stale-if-error=30", 91, [], False),
    ("5861-4-request-sie", "max-age=60", 80, [CC + "stale-if-error=60"], True),
    ("5861-4-sie-zero-at-expiry", "max-age=60, stale-if-error=0", 60, [], True),
    ("9111-4.2.4-no-permission-no-stale", "max-age=60", 80, [], False),
    ("9111-5.2.2.2-must-revalidate-forbids-stale-on-error",
     "max-age=60, stale-if-error=30, must-revalidate", 70, [], False),
    ("9111-5.2.2.4-no-cache-forbids-stale-on-error", "max-age=60, stale-if-error=30, no-cache",
     70, [], False),
]
# fmt: on


@pytest.mark.parametrize(
    ("response_cc", "lifetime", "age", "request_headers", "expected"), cases(REUSE)
)
def test_reuse(
    response_cc: str, lifetime: float, age: float, request_headers: list[str], expected: Reuse
) -> None:
    assert reuse(policy(response_cc, lifetime), age, req(*request_headers)) is expected


@pytest.mark.parametrize(
    ("response_cc", "age", "request_headers", "expected"), cases(STALE_ON_ERROR)
)
def test_stale_on_error(
    response_cc: str, age: float, request_headers: list[str], expected: bool
) -> None:
    assert stale_on_error(policy(response_cc, 60), age, req(*request_headers)) is expected


def test_9111_5_2_1_request_directives_parsed() -> None:
    d = req("cache-control: max-age=5, MIN-FRESH=3, max-stale=7, only-if-cached, no-store")
    assert (d.max_age, d.min_fresh, d.max_stale, d.only_if_cached, d.no_store) == (
        5,
        3,
        7,
        True,
        True,
    )
    assert req("cache-control: max-stale=oops").max_stale is None  # invalid: ignored


# -- stored and updated header fields (RFC 9111 §3.1, §3.2, §4.3.4) ------------------------------


def test_9111_3_1_stored_headers_leave_out_per_response_and_private_fields() -> None:
    headers = H("content-type: text/plain", "age: 5", "x-request-id: r1", "x-cache: HIT",
                "proxy-authenticate: Basic", "set-cookie: a=1", "x-user: bob")  # fmt: skip
    cc = parse_cache_control([b'private="set-cookie, X-User", max-age=60'])
    assert stored_headers(headers, cc) == H("content-type: text/plain")


def test_9111_3_2_a_304_replaces_fields_but_not_content_length() -> None:
    stored = H("content-length: 10", 'etag: "a"', "cache-control: max-age=1", "x-a: 1", "x-a: 2")
    fresh = H("content-length: 0", 'etag: "a"', "cache-control: max-age=60", "x-a: 3", "age: 4")
    merged = updated_headers(stored, fresh)
    assert sorted(merged) == sorted(
        H("content-length: 10", 'etag: "a"', "cache-control: max-age=60", "x-a: 3")
    )


# -- Vary (RFC 9111 §4.1) -------------------------------------------------------------------------

# fmt: off
VARY = [
    # id, field, values in one request, values in another, equal after normalisation?
    ("9111-4.1-whitespace-removed-where-allowed", "accept-encoding", ["gzip, br"], ["gzip,br"],
     True),
    ("9111-4.1-field-lines-combined", "accept-encoding", ["gzip", "br"], ["gzip, br"], True),
    ("9111-4.1-case-folded-where-case-insensitive", "accept-encoding", ["GZIP"], ["gzip"], True),
    ("9111-4.1-order-folded-where-insignificant", "accept-encoding", ["br, gzip"], ["gzip, br"],
     True),
    ("9111-4.1-ows-around-parameters", "accept-encoding", ["gzip;q=0.5"], ["gzip ; q=0.5"], True),
    ("9111-4.1-language-order-kept", "accept-language", ["de, en"], ["en, de"], False),
    ("9111-4.1-language-tags-case-insensitive", "accept-language", ["EN-us"], ["en-US"], True),
    ("9111-4.1-unknown-field-compared-exactly", "x-tenant", ["Acme"], ["acme"], False),
    ("9111-4.1-absent-differs-from-empty", "accept-encoding", [], [""], False),
    ("9111-4.1-absent-matches-absent", "accept-encoding", [], [], True),
]
# fmt: on


@pytest.mark.parametrize(("name", "a", "b", "equal"), cases(VARY))
def test_vary_normalisation(name: str, a: list[str], b: list[str], equal: bool) -> None:
    na = normalize(name, [v.encode() for v in a])
    nb = normalize(name, [v.encode() for v in b])
    assert (na == nb) is equal


def test_9111_4_1_secondary_key_uses_only_nominated_fields() -> None:
    one = secondary_key(("accept-encoding",), H("accept-encoding: gzip", "user-agent: a"))
    two = secondary_key(("accept-encoding",), H("accept-encoding: gzip", "user-agent: b"))
    assert one == two
    assert secondary_key((), H("accept-encoding: gzip")) == b""
    assert secondary_key(("x-a",), []).endswith(ABSENT)


def test_9111_4_1_vary_field_names_case_insensitive() -> None:
    assert ResponseInfo(H("vary: Accept-Encoding, ACCEPT-language", "vary: accept")).vary == (
        "accept-encoding",
        "accept-language",
        "accept",
    )


# -- conditional requests (RFC 9110 §13, RFC 9111 §4.3) ------------------------------------------


def cond(*pairs: str) -> Conditions | None:
    return Conditions.from_headers(H(*pairs))


LM = NOW - 1000
INM = "if-none-match: "
IMS = "if-modified-since: "

# fmt: off
NOT_MODIFIED = [
    # id, request headers, stored ETag, stored Last-Modified, 304?
    ("9110-13.1.2-etag-matches", [INM + '"a"'], b'"a"', None, True),
    ("9110-8.8.3.2-weak-comparison", [INM + 'W/"a"'], b'"a"', None, True),
    ("9110-13.1.2-any-tag-in-list", [INM + '"x", "a"'], b'W/"a"', None, True),
    ("9110-13.1.2-no-match", [INM + '"b"'], b'"a"', None, False),
    ("9110-13.1.2-star", [INM + "*"], b'"a"', None, True),
    ("9110-13.1.3-ims-ignored-with-inm", [INM + '"b"', IMS + format_http_date(NOW).decode()],
     b'"a"', LM, False),
    ("9110-13.1.3-not-modified-since", [IMS + format_http_date(LM).decode()], None, LM, True),
    ("9110-13.1.3-modified-since", [IMS + format_http_date(LM - 1).decode()], None, LM, False),
    ("9110-13.1.3-invalid-date-ignored", [IMS + "yesterday"], None, LM, False),
    ("9110-13-unconditional", [], b'"a"', LM, False),
]
# fmt: on


@pytest.mark.parametrize(
    ("request_headers", "etag", "last_modified", "expected"), cases(NOT_MODIFIED)
)
def test_not_modified(
    request_headers: list[str], etag: bytes | None, last_modified: float | None, expected: bool
) -> None:
    assert not_modified(cond(*request_headers), etag, last_modified, NOW) is expected


def test_9111_4_3_2_ims_falls_back_to_date_without_last_modified() -> None:
    since = cond("if-modified-since: " + format_http_date(NOW).decode())
    assert not_modified(since, None, None, NOW - 5)
    assert not not_modified(since, None, None, NOW + 5)


def test_9110_15_4_5_not_modified_carries_the_validators_and_caching_fields() -> None:
    stored = H("content-type: text/html", "content-length: 5", 'etag: "a"', "date: x",
               "cache-control: max-age=60", "vary: accept", "last-modified: y")  # fmt: skip
    assert not_modified_headers(stored) == H(
        'etag: "a"', "date: x", "cache-control: max-age=60", "vary: accept"
    )
    assert (b"last-modified", b"y") in not_modified_headers(H("last-modified: y"))


def test_9111_4_3_1_validation_request_carries_stored_validators_only() -> None:
    headers = H("accept: */*", 'if-none-match: "client"', "if-modified-since: x")
    assert validation_headers(headers, b'"stored"', b"lm") == H(
        "accept: */*", 'if-none-match: "stored"', "if-modified-since: lm"
    )


# -- parsing (RFC 9111 §5.2, RFC 9110 §5.6) -------------------------------------------------------


def test_9111_5_2_cache_control_parsing() -> None:
    cc = parse_cache_control([b'private="a, b", max-age=5', b"No-Store , must-revalidate"])
    assert cc == {"private": "a, b", "max-age": "5", "no-store": None, "must-revalidate": None}
    assert argument_names(cc["private"]) == ("a", "b")
    assert parse_cache_control([b"max-age=1, max-age=2"])["max-age"] == CONFLICT
    assert delta_seconds("-1") is None and delta_seconds("٣") is None


def test_9110_5_6_7_http_date_forms() -> None:
    expected = 784111777.0
    assert http_date(b"Sun, 06 Nov 1994 08:49:37 GMT") == expected
    assert http_date(b"Sunday, 06-Nov-94 08:49:37 GMT") == expected
    assert http_date(b"Sun Nov  6 08:49:37 1994") == expected
    assert http_date(b"0") is None and http_date(b"Sun, 06 Xyz 1994 08:49:37 GMT") is None


def test_9110_8_8_3_entity_tags_may_hold_commas() -> None:
    assert parse_etags([b'"a,b", W/"c"']) == (b'"a,b"', b'W/"c"')
    assert parse_etags([b"*"]) == STAR


# -- keys and invalidation (RFC 9111 §2, §4.4) ----------------------------------------------------


def test_9111_2_primary_key_and_host_normalisation() -> None:
    assert normalize_host("http", b"Example.COM:80") == b"example.com"
    assert normalize_host("https", b"example.com:443") == b"example.com"
    assert normalize_host("http", b"example.com:8080") == b"example.com:8080"
    assert normalize_host("http", b"evil/x") is None
    key = primary_key("GET", "http", b"h", b"/a?b=1")
    assert key == b"GET http://h/a?b=1" and target_of(key) == b"/a?b=1"


# fmt: off
INVALIDATED = [
    # id, unsafe request's response headers, targets invalidated (request: /items on shop.example)
    ("9111-4.4-target-uri", [], [b"/items"]),
    ("9111-4.4-location-same-origin", ["location: /items/7"], [b"/items", b"/items/7"]),
    ("9111-4.4-content-location-absolute", ["content-location: http://shop.example/items/7?v=1"],
     [b"/items", b"/items/7?v=1"]),
    ("9111-4.4-relative-reference", ["location: 7"], [b"/items", b"/7"]),
    ("9111-4.4-other-origin-not-invalidated", ["location: http://other.example/items/7"],
     [b"/items"]),
    ("9111-4.4-other-scheme-not-invalidated", ["location: https://shop.example/items/7"],
     [b"/items"]),
]
# fmt: on


@pytest.mark.parametrize(("response", "expected"), cases(INVALIDATED))
def test_invalidated_targets(response: list[str], expected: list[bytes]) -> None:
    assert invalidated_targets("http", b"shop.example", b"/items", H(*response)) == expected


def test_request_directives_are_parsed_once_per_distinct_value_and_the_memo_is_bounded() -> None:
    from lb.cache.request import DIRECTIVES_MEMO_MAX, DirectivesMemo, cache_request

    memo: DirectivesMemo = {}

    def request(*pairs: tuple[bytes, bytes]) -> RequestDirectives:
        scope = {"scheme": "http", "headers": [(b"host", b"a.test"), *pairs]}
        parsed = cache_request(scope, "GET", b"/", memo)
        assert parsed is not None
        return parsed.directives

    first = request((b"cache-control", b"max-age=5"))
    assert first.max_age == 5 and request((b"cache-control", b"max-age=5")) is first
    other = request((b"cache-control", b"max-age=5"), (b"pragma", b"no-cache"))
    assert other is not first and other.max_age == 5 and not other.no_cache  # CC wins (§5.4)
    assert request((b"pragma", b"no-cache")).no_cache
    for n in range(DIRECTIVES_MEMO_MAX * 2):
        assert request((b"cache-control", f"max-age={n}".encode())).max_age == n
    assert len(memo) <= DIRECTIVES_MEMO_MAX
