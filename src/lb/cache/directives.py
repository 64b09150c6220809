"""Parsing of the header fields caching depends on: Cache-Control, HTTP-dates, delta-seconds,
entity-tags and field-name lists (RFC 9111 §1.2, §5; RFC 9110 §5.6, §8.8.3).

Everything here is pure and tolerant: malformed input yields "invalid" (None), never an exception.
"""

from __future__ import annotations

import calendar
import email.utils
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


def http_date(value: bytes | None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7) as POSIX seconds, or None when absent or invalid.

    IMF-fixdate, the form every current sender uses, is parsed directly; the obsolete RFC 850 and
    asctime forms go through `email.utils`.
    """
    if value is None:
        return None
    # IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    if len(value) == 29 and value[3:5] == b", " and value[25:] == b" GMT":
        month = _MONTHS.get(value[8:11])
        try:
            if month is not None:
                return float(
                    calendar.timegm(
                        (
                            int(value[12:16]),
                            month,
                            int(value[5:7]),
                            int(value[17:19]),
                            int(value[20:22]),
                            int(value[23:25]),
                        )
                    )
                )
        except ValueError:
            return None
    try:
        parsed = email.utils.parsedate_tz(value.decode("latin-1"))
    except (ValueError, IndexError, TypeError):
        return None
    if parsed is None:
        return None
    try:
        return float(email.utils.mktime_tz(parsed))
    except (OverflowError, ValueError):
        return None


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
