"""Parsing of the header fields caching depends on: Cache-Control, HTTP-dates, delta-seconds,
entity-tags and field-name lists (RFC 9111 §1.2, §5; RFC 9110 §5.6, §8.8.3).

Everything here is pure and tolerant: malformed input yields "invalid" (None), never an exception.
"""

from __future__ import annotations

import calendar
import email.utils
import re
import time
from collections.abc import Iterable

Directives = dict[str, str | None]
"""Cache-Control: lower-case directive name -> argument (unquoted) or None when it has none."""

CONFLICT = "\x00conflict"
"""The argument of a directive given twice with different values: invalid wherever it is read,
so conflicting freshness makes a response stale (RFC 9111 §4.2.1)."""

MAX_DELTA = 2**31  # RFC 9111 §1.2.2: larger delta-seconds are taken as 2^31

_MONTHS = {
    b"Jan": 1, b"Feb": 2, b"Mar": 3, b"Apr": 4, b"May": 5, b"Jun": 6,
    b"Jul": 7, b"Aug": 8, b"Sep": 9, b"Oct": 10, b"Nov": 11, b"Dec": 12,
}  # fmt: skip


def _split_list(value: str) -> Iterable[str]:
    """Split a comma-separated list, keeping commas inside quoted strings (RFC 9110 §5.6.1)."""
    if '"' not in value:
        yield from value.split(",")
        return
    start = 0
    quoted = False
    escaped = False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            yield value[start:i]
            start = i + 1
    yield value[start:]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        if "\\" in inner:
            out = []
            chars = iter(inner)
            for char in chars:
                out.append(next(chars, "") if char == "\\" else char)
            return "".join(out)
        return inner
    return value


def parse_cache_control(values: Iterable[bytes]) -> Directives:
    """Cache-Control field lines, combined (RFC 9111 §5.2): names compared case-insensitively,
    arguments in token or quoted-string form alike."""
    out: Directives = {}
    for line in values:
        for item in _split_list(line.decode("latin-1")):
            name, eq, argument = item.partition("=")
            name = name.strip().lower()
            if not name:
                continue
            arg = _unquote(argument.strip()) if eq else None
            if name in out and out[name] != arg:
                out[name] = CONFLICT
            else:
                out[name] = arg
    return out


def delta_seconds(value: str | None) -> int | None:
    """A delta-seconds argument (RFC 9111 §1.2.2), or None when absent or invalid."""
    if value is None or not value.isdigit() or not value.isascii():
        return None
    number = int(value)
    return number if number < MAX_DELTA else MAX_DELTA


_MONTH = rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = rb"(\d\d):(\d\d):(\d\d)"
# RFC 9110 §5.6.7: the three forms a recipient reads, and nothing else. Names are matched without
# regard to case (a robustness the RFC encourages; the meaning cannot change), but the spacing,
# the punctuation, the digits and the GMT zone are exactly as the grammar has them.
_IMF_FIXDATE = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) " + _MONTH + rb" (\d{4}) " + _TIME + rb" GMT",
    re.IGNORECASE,
)
_RFC850_DATE = re.compile(
    rb"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d\d)-"
    + _MONTH
    + rb"-(\d\d) "
    + _TIME
    + rb" GMT",
    re.IGNORECASE,
)
_ASCTIME_DATE = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) " + _MONTH + rb" (\d\d| \d) " + _TIME + rb" (\d{4})",
    re.IGNORECASE,
)


def http_date(value: bytes | None, now: float | None = None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7) as POSIX seconds, or None when absent or invalid.

    Only IMF-fixdate and the obsolete RFC 850 and asctime forms are dates; anything else ("UTC"
    for "GMT", a two-digit year outside RFC 850, a missing comma, doubled spaces) is invalid,
    since a cache that guesses may read a date far in the future into a stale response. `now`
    places RFC 850's two-digit years (default: the current time).
    """
    if value is None:
        return None
    text = value.strip(b" \t")
    match = _IMF_FIXDATE.fullmatch(text)
    if match is not None:
        day, month, year, hour, minute, second = match.groups()
        return _timestamp(int(year), month, int(day), hour, minute, second)
    match = _RFC850_DATE.fullmatch(text)
    if match is not None:
        day, month, short_year, hour, minute, second = match.groups()
        # A two-digit year more than 50 years ahead is the latest past year with those digits.
        this_year = time.gmtime(now).tm_year
        year = this_year - this_year % 100 + int(short_year)
        if year > this_year + 50:
            year -= 100
        return _timestamp(year, month, int(day), hour, minute, second)
    match = _ASCTIME_DATE.fullmatch(text)
    if match is not None:
        month, day_text, hour, minute, second, year = match.groups()
        return _timestamp(int(year), month, int(day_text.strip()), hour, minute, second)
    return None


def _timestamp(
    year: int, month_name: bytes, day: int, hour: bytes, minute: bytes, second: bytes
) -> float | None:
    month = _MONTHS[month_name.title()]
    h, m, s = int(hour), int(minute), int(second)
    if (
        year < 1
        or not 1 <= day <= calendar.monthrange(year, month)[1]
        or h > 23
        or m > 59
        or s > 60
    ):
        return None
    return float(calendar.timegm((year, month, day, h, m, s)))


def first_delta(value: bytes | None) -> int | None:
    """The first member of a delta-seconds field that may have been combined into a list, as
    `Age: 7200, 0` (RFC 9111 §5.1: a cache uses the first value; the rest is ignored). None when
    absent or invalid."""
    if value is None:
        return None
    return delta_seconds(value.split(b",", 1)[0].strip(b" \t").decode("latin-1"))


def format_http_date(seconds: float) -> bytes:
    return email.utils.formatdate(seconds, usegmt=True).encode("ascii")


def field_names(values: Iterable[bytes]) -> tuple[str, ...]:
    """A list of field names (Vary, Connection-style lists), lower-cased, in order, deduplicated."""
    out: list[str] = []
    for line in values:
        for item in line.decode("latin-1").split(","):
            name = item.strip().lower()
            if name and name not in out:
                out.append(name)
    return tuple(out)


def argument_names(argument: str | None) -> tuple[str, ...]:
    """The field names in a qualified `private="a, b"` or `no-cache="a"` argument."""
    if not argument or argument == CONFLICT:
        return ()
    return field_names((argument.encode("latin-1"),))


_ENTITY_TAG = re.compile(rb'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"')


def entity_tag(value: bytes) -> bytes | None:
    """An ETag value if it is an entity-tag (RFC 9110 §8.8.3: optionally `W/`, then a quoted
    opaque tag), else None: an unquoted or otherwise malformed ETag is no validator."""
    value = value.strip(b" \t")
    return value if _ENTITY_TAG.fullmatch(value) is not None else None


STAR = (b"*",)
"""`parse_etags` result for `If-None-Match: *`."""


def parse_etags(values: Iterable[bytes]) -> tuple[bytes, ...]:
    """The entity-tags of If-None-Match lines (RFC 9110 §13.1.2), or STAR for "*".

    Tags keep their `W/` prefix and quotes; an entity-tag may itself contain commas.
    """
    tags: list[bytes] = []
    for line in values:
        i = 0
        n = len(line)
        while i < n:
            char = line[i]
            if char in b" \t,":
                i += 1
            elif char == 0x2A:  # "*"
                return STAR
            else:
                start = i
                if line.startswith(b"W/", i):
                    i += 2
                if i < n and line[i] == 0x22:  # '"'
                    end = line.find(b'"', i + 1)
                    if end == -1:
                        return tuple(tags)  # malformed: keep what parsed
                    tags.append(line[start : end + 1])
                    i = end + 1
                else:  # not an entity-tag; skip to the next comma
                    comma = line.find(b",", i)
                    i = n if comma == -1 else comma + 1
    return tuple(tags)


def weak_match(a: bytes, b: bytes) -> bool:
    """Weak comparison of two entity-tags (RFC 9110 §8.8.3.2): opaque tags equal, W/ ignored."""
    return (a[2:] if a.startswith(b"W/") else a) == (b[2:] if b.startswith(b"W/") else b)


def strong(tag: bytes) -> bool:
    return not tag.startswith(b"W/")
