"""How the cache reads the fields it depends on: HTTP-dates (RFC 9110 §5.6.7), Age (RFC 9111
§5.1), targeted cache-control fields (RFC 9213) and the switches of lb's own (heuristic freshness,
store_set_cookie). Case ids start with the section they check, as in test_cache_rules.py."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from lb.cache.directives import format_http_date, http_date
from lb.cache.entry import Entry
from lb.cache.ranges import UNSATISFIABLE, byte_range
from lb.cache.rules import (
    HEURISTIC_MAX,
    RequestDirectives,
    ResponseInfo,
    explicit_lifetime,
    freshness_lifetime,
    storable,
)
from lb.cache.targeted import parse_targeted, select_directives
from unit.test_cache_rules import H

NOW = 1_700_000_000.0
CDN = ("cdn-cache-control",)
FAR_EXPIRES = "expires: Thu, 18 Aug 2050 02:01:18 GMT"


def cases(table: Sequence[tuple[object, ...]]) -> list[object]:
    return [pytest.param(*row[1:], id=str(row[0])) for row in table]


# -- HTTP-date: the three forms and nothing else -------------------------------------------------

# fmt: off
DATES = [
    ("9110-5.6.7-imf-fixdate", "Thu, 18 Aug 2050 02:01:18 GMT", 2544400878.0),
    ("9110-5.6.7-rfc850", "Thursday, 18-Aug-50 02:01:18 GMT", 2544400878.0),
    ("9110-5.6.7-asctime-one-digit-day", "Thu Aug  8 02:01:18 2050", 2543536878.0),
    ("9110-5.6.7-asctime-two-digit-day", "Thu Aug 18 02:01:18 2050", 2544400878.0),
    ("lb-names-in-any-case", "THU, 18 AUG 2050 02:01:18 gmt", 2544400878.0),
    ("9110-5.6.7-utc-is-not-gmt", "Thu, 18 Aug 2050 02:01:18 UTC", None),
    ("9110-5.6.7-other-zone", "Thu, 18 Aug 2050 02:01:18 AEST", None),
    ("9110-5.6.7-two-digit-year-in-imf", "Thu, 18 Aug 50 02:01:18 GMT", None),
    ("9110-5.6.7-missing-comma", "Thu 18 Aug 2050 02:01:18 GMT", None),
    ("9110-5.6.7-doubled-spaces", "Thu, 18  Aug  2050 02:01:18 GMT", None),
    ("9110-5.6.7-dashes-in-imf", "Thu, 18-Aug-2050 02:01:18 GMT", None),
    ("9110-5.6.7-periods-in-time", "Thu, 18 Aug 2050 02.01.18 GMT", None),
    ("9110-5.6.7-one-digit-hour", "Thu, 18 Aug 2050 2:01:18 GMT", None),
    ("9110-5.6.7-no-such-day", "Thu, 31 Feb 2050 02:01:18 GMT", None),
    ("9110-5.6.7-hour-24", "Thu, 18 Aug 2050 24:01:18 GMT", None),
    ("9110-5.6.7-numeric-zone", "Thu, 18 Aug 2050 02:01:18 +0000", None),
    ("9110-5.6.7-a-number", "0", None),
    ("9110-5.6.7-empty", "", None),
]
# fmt: on


@pytest.mark.parametrize(("text", "expected"), cases(DATES))
def test_http_date(text: str, expected: float | None) -> None:
    assert http_date(text.encode()) == expected


def test_9110_5_6_7_rfc850_year_more_than_50_years_ahead_is_in_the_past() -> None:
    in_2026 = 1_780_000_000.0
    assert http_date(b"Monday, 01-Jan-80 00:00:00 GMT", in_2026) == 315532800.0  # 1980
    assert http_date(b"Friday, 01-Jan-60 00:00:00 GMT", in_2026) == 2840140800.0  # 2060


@pytest.mark.parametrize(
    ("expires", "lifetime"),
    cases(
        [
            ("9111-5.3-valid-expires", "Thu, 18 Aug 2050 02:01:18 GMT", 2544400878.0 - NOW),
            ("9111-5.3-invalid-expires-utc-expired", "Thu, 18 Aug 2050 02:01:18 UTC", 0.0),
            ("9111-5.3-invalid-expires-two-digit-year-expired", "Thu, 18 Aug 50 02:01:18 GMT", 0.0),
        ]
    ),
)
def test_9111_5_3_invalid_expires_means_already_expired(expires: str, lifetime: float) -> None:
    info = ResponseInfo(H("date: " + format_http_date(NOW).decode(), "expires: " + expires))
    assert explicit_lifetime(info, NOW) == lifetime


def test_9110_5_6_7_invalid_last_modified_and_date_are_absent() -> None:
    info = ResponseInfo(H("date: Thu, 18 Aug 2050 02:01:18 UTC", "last-modified: yesterday"))
    assert info.date is None and info.last_modified is None


# -- Age: the first value counts -----------------------------------------------------------------

# fmt: off
AGES = [
    ("9111-5.1-single", ["age: 7200"], 7200.0),
    ("9111-5.1-first-of-a-list", ["age: 7200, 0"], 7200.0),
    ("9111-5.1-first-of-a-list-small", ["age: 0, 7200"], 0.0),
    ("9111-5.1-first-line", ["age: 7200", "age: 0"], 7200.0),
    ("9111-5.1-first-line-small", ["age: 0", "age: 7200"], 0.0),
    ("9111-5.1-invalid-ignored", ["age: abc"], 0.0),
    ("9111-5.1-negative-ignored", ["age: -7200"], 0.0),
    ("9111-5.1-float-ignored", ["age: 7200.0"], 0.0),
]
# fmt: on


@pytest.mark.parametrize(("lines", "expected"), cases(AGES))
def test_age_first_value(lines: list[str], expected: float) -> None:
    assert ResponseInfo(H(*lines)).age == expected


# -- targeted fields (RFC 9213) -------------------------------------------------------------------

# fmt: off
TARGETED = [
    # id, field value, directives (None: the field is ignored)
    ("9213-max-age", "max-age=3600", {"max-age": "3600"}),
    ("9213-extension-directive", "foobar, max-age=3600", {"foobar": None, "max-age": "3600"}),
    ("9213-capped-at-2^31", "max-age=99999999999", {"max-age": "2147483648"}),
    ("9213-flags", "no-store, private", {"no-store": None, "private": None}),
    ("9213-string-argument", 'private="set-cookie"', {"private": "set-cookie"}),
    ("9213-false-is-absent", "no-store=?0, max-age=5", {"max-age": "5"}),
    ("9213-parameters-dropped", "max-age=5;a=1", {"max-age": "5"}),
    ("9213-wrong-type-string", 'max-age="10000"', None),
    ("9213-wrong-type-decimal", "max-age=1.5", None),
    ("9213-negative", "max-age=-1", None),
    ("8941-not-a-dictionary", "max-age=10000, &&&&&", None),
    ("8941-space-before-equals", "max-age =100", None),
    ("8941-upper-case-key", "MaX-aGe=3600", None),
    ("8941-trailing-comma", "max-age=5,", None),
    ("8941-empty", "", None),
]
# fmt: on


@pytest.mark.parametrize(("value", "expected"), cases(TARGETED))
def test_parse_targeted(value: str, expected: dict[str, str | None] | None) -> None:
    assert parse_targeted([value.encode()]) == expected


def test_9213_first_valid_field_in_list_order() -> None:
    headers = H("cdn-cache-control: max-age=&", "lb-cache-control: max-age=5")
    assert select_directives(headers, ("cdn-cache-control", "lb-cache-control")) == (
        "lb-cache-control",
        {"max-age": "5"},
    )
    assert select_directives(headers, ("cdn-cache-control",)) is None


# fmt: off
TARGETED_LIFETIME = [
    # id, Cache-Control, CDN-Cache-Control, other fields, stored?, lifetime
    ("9213-beats-shorter-cache-control", "max-age=1", "max-age=3600", [], True, 3600.0),
    ("9213-beats-longer-cache-control", "max-age=3600", "max-age=1", [], True, 1.0),
    ("9213-expires-ignored", None, "max-age=0", [FAR_EXPIRES], False, 0.0),
    ("9213-invalid-expires-ignored", None, "max-age=60", ["expires: 0"], True, 60.0),
    ("9213-cache-control-no-store-ignored", "no-store", "max-age=60", [], True, 60.0),
    ("9213-no-store-wins", "max-age=60", "no-store", [], False, 0.0),
    ("9213-private-wins", "max-age=60", "private", [FAR_EXPIRES], False, 0.0),
    ("9213-invalid-field-falls-back", "no-store", 'max-age="60"', [], False, 0.0),
]
# fmt: on


@pytest.mark.parametrize(("cc", "cdn", "others", "stored", "lifetime"), cases(TARGETED_LIFETIME))
def test_targeted_field_decides(
    cc: str | None, cdn: str, others: list[str], stored: bool, lifetime: float
) -> None:
    fields = [*others, "cdn-cache-control: " + cdn]
    if cc is not None:
        fields.append("cache-control: " + cc)
    info = ResponseInfo(H(*fields), CDN)
    found = freshness_lifetime(info, 200, NOW, 0) or 0.0
    assert found == lifetime
    directives = RequestDirectives({})
    assert storable(200, info, directives, authorization=False, lifetime=found) is stored


def test_9213_not_honoured_when_not_listed() -> None:
    info = ResponseInfo(H("cache-control: max-age=1", "cdn-cache-control: max-age=3600"), ())
    assert explicit_lifetime(info, NOW) == 1.0 and info.cc_field == ""


def test_9213_stored_entry_keeps_the_field_its_directives_came_from() -> None:
    headers = H("cache-control: no-cache, max-age=1", "cdn-cache-control: max-age=3600")
    info = ResponseInfo(headers, CDN)
    entry = Entry(
        b"GET http://a/",
        200,
        headers,
        b"body",
        response_time=NOW,
        initial_age=0.0,
        lifetime=3600.0,
        vary=(),
        secondary=b"",
        info=info,
    )
    decoded = Entry.decode(entry.encode())
    assert decoded is not None
    assert decoded.cc_field == "cdn-cache-control"
    assert not decoded.policy.no_cache  # Cache-Control's no-cache stays ignored
    assert decoded.stored_until == entry.stored_until


# -- heuristic freshness (RFC 9111 §4.2.2) --------------------------------------------------------


def lm(seconds_ago: float) -> list[tuple[bytes, bytes]]:
    return H(
        "date: " + format_http_date(NOW).decode(),
        "last-modified: " + format_http_date(NOW - seconds_ago).decode(),
    )


def test_9111_4_2_2_heuristic_is_a_tenth_of_the_time_since_last_modified() -> None:
    info = ResponseInfo(lm(10_000))
    assert freshness_lifetime(info, 200, NOW, 0, heuristic=True) == 1000.0
    assert freshness_lifetime(info, 200, NOW, 0) is None  # off unless asked for


def test_9111_4_2_2_heuristic_is_capped() -> None:
    info = ResponseInfo(lm(365 * 86400))
    assert freshness_lifetime(info, 200, NOW, 0, heuristic=True) == HEURISTIC_MAX


@pytest.mark.parametrize(
    ("status", "cc", "expected"),
    cases(
        [
            ("9111-4.2.2-404-heuristically-cacheable", 404, [], 1000.0),
            ("9111-4.2.2-201-not", 201, [], None),
            ("9111-4.2.2-503-not", 503, [], None),
            ("9111-4.2.2-public-allows-any-status", 599, ["cache-control: public"], 1000.0),
        ]
    ),
)
def test_9111_4_2_2_heuristic_only_for_heuristically_cacheable_statuses(
    status: int, cc: list[str], expected: float | None
) -> None:
    info = ResponseInfo(lm(10_000) + H(*cc))
    assert freshness_lifetime(info, status, NOW, 0, heuristic=True) == expected


def test_9111_4_2_2_explicit_freshness_beats_the_heuristic_and_default_ttl_follows_it() -> None:
    explicit = ResponseInfo(lm(10_000) + H("cache-control: max-age=5"))
    assert freshness_lifetime(explicit, 200, NOW, 0, heuristic=True) == 5.0
    no_last_modified = ResponseInfo(H("date: " + format_http_date(NOW).decode()))
    assert freshness_lifetime(no_last_modified, 200, NOW, 30, heuristic=True) == 30.0
    assert freshness_lifetime(no_last_modified, 200, NOW, 0, heuristic=True) is None


# -- Set-Cookie: lb's safe default and its switch -------------------------------------------------


def test_lb_set_cookie_stored_only_when_switched_on() -> None:
    info = ResponseInfo(H("cache-control: max-age=60", "set-cookie: s=1"))
    directives = RequestDirectives({})
    assert not storable(200, info, directives, authorization=False, lifetime=60.0)
    assert storable(
        200, info, directives, authorization=False, lifetime=60.0, store_set_cookie=True
    )


# -- Range (RFC 9110 §14) -------------------------------------------------------------------------

# fmt: off
RANGES = [
    # id, Range value, representation length, (first, last) / UNSATISFIABLE / None (whole 200)
    ("9110-14.1.2-first-last", "bytes=0-1", 11, (0, 1)),
    ("9110-14.1.2-open-end", "bytes=1-", 11, (1, 10)),
    ("9110-14.1.2-last-past-the-end-clipped", "bytes=5-100", 11, (5, 10)),
    ("9110-14.1.2-suffix", "bytes=-1", 11, (10, 10)),
    ("9110-14.1.2-suffix-longer-than-all", "bytes=-100", 11, (0, 10)),
    ("9110-14.1.1-unit-case-and-spaces", "Bytes = 0-1 ", 11, (0, 1)),
    ("9110-14.2-first-past-the-end-416", "bytes=11-", 11, UNSATISFIABLE),
    ("9110-14.2-zero-suffix-416", "bytes=-0", 11, UNSATISFIABLE),
    ("9110-14.2-several-ranges-whole", "bytes=0-1,4-5", 11, None),
    ("9110-14.2-one-satisfiable-of-several", "bytes=0-1,40-50", 11, (0, 1)),
    ("9110-14.1.1-last-before-first-invalid", "bytes=5-1", 11, None),
    ("9110-14.1.1-other-unit-ignored", "items=0-1", 11, None),
    ("9110-14.1.1-garbage-ignored", "bytes=a-b", 11, None),
    ("9110-14.1.1-dash-alone-ignored", "bytes=-", 11, None),
]
# fmt: on


@pytest.mark.parametrize(("value", "length", "expected"), cases(RANGES))
def test_byte_range(value: str, length: int, expected: tuple[int, int] | None) -> None:
    assert byte_range(value.encode(), length) == expected
