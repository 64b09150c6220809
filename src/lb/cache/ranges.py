"""Range requests answered from a stored complete response (RFC 9110 §14).

Only `bytes` ranges of a GET are served. One satisfiable range gets a 206 with Content-Range;
several ranges get the whole response with 200 (RFC 9110 §14.2 lets a server ignore Range, and a
multipart/byteranges body is not worth its cost here); none satisfiable gets a 416.
"""

from __future__ import annotations

import re

UNSATISFIABLE = (-1, -1)
"""`byte_range` result: the Range cannot be satisfied (416)."""

_SPEC = re.compile(rb"(\d*)-(\d*)")


def byte_range(value: bytes, length: int) -> tuple[int, int] | None:
    """The (first, last) byte positions of a `Range` value for a representation of `length`
    bytes; UNSATISFIABLE; or None to answer with the whole representation (a unit other than
    bytes, invalid syntax, several ranges)."""
    unit, eq, specs = value.partition(b"=")
    if not eq or unit.strip(b" \t").lower() != b"bytes":
        return None
    found: list[tuple[int, int]] = []
    parts = [p.strip(b" \t") for p in specs.split(b",")]
    for part in parts:
        if not part:
            continue  # empty list elements are allowed (RFC 9110 §5.6.1)
        match = _SPEC.fullmatch(part)
        if match is None:
            return None
        first_text, last_text = match.groups()
        if first_text:
            first = int(first_text)
            last = int(last_text) if last_text else length - 1
            if last_text and last < first:
                return None  # an invalid range-spec makes the whole field invalid (§14.1.1)
            if first < length:
                found.append((first, min(last, length - 1)))
        elif last_text:
            suffix = int(last_text)
            if suffix > 0 and length > 0:
                found.append((max(0, length - suffix), length - 1))
        else:
            return None  # "-" alone
    if not found:
        return UNSATISFIABLE if any(parts) else None
    if len(found) > 1:
        return None
    return found[0]


def content_range(first: int, last: int, length: int) -> bytes:
    return b"bytes %d-%d/%d" % (first, last, length)


def unsatisfied_range(length: int) -> bytes:
    return b"bytes */%d" % length
