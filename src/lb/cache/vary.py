"""Secondary cache keys from Vary (RFC 9111 §4.1).

A stored response matches a request when the request header fields its Vary names have the same
values as in the request that stored it, after only the normalisations §4.1 allows: combining
field lines, removing whitespace where the field's syntax allows it, and case- or order-folding
where the field's definition says they carry no meaning. Anything else is compared byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence

# List-valued fields whose syntax allows OWS around "," and ";" (RFC 9110 §5.6.1, §5.6.6).
_LISTS = frozenset({"accept", "accept-encoding", "accept-charset", "accept-language"})
# Content codings, charsets and language tags are case-insensitive (RFC 9110 §8.4.1, §12.5.2,
# §8.5.1), and the only parameter these fields take is a weight.
_CASE_INSENSITIVE = frozenset({"accept-encoding", "accept-charset", "accept-language"})
# Order carries no meaning among content codings: preference is by weight (RFC 9110 §12.5.3).
_UNORDERED = frozenset({"accept-encoding"})

ABSENT = b"\x00"
"""Stands for a field the request did not have: it matches only another absence (§4.1)."""


def _element(item: bytes) -> bytes:
    parts = [p.strip(b" \t") for p in item.split(b";")]
    return b";".join(p for p in parts if p)


def normalize(name: str, values: Sequence[bytes]) -> bytes:
    """One request field's value for comparison, or ABSENT when the request lacks it."""
    if not values:
        return ABSENT
    if name not in _LISTS:
        return b", ".join(v.strip(b" \t") for v in values)
    items = [_element(item) for value in values for item in value.split(b",")]
    items = [item for item in items if item]  # empty list elements carry nothing (§5.6.1)
    if name in _CASE_INSENSITIVE:
        items = [item.lower() for item in items]
    if name in _UNORDERED:
        items.sort()
    return b",".join(items)


def secondary_key(names: Sequence[str], headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The request's values for the fields in `names` (lower-case), as one comparable key."""
    if not names:
        return b""
    wanted = {name.encode("latin-1"): name for name in names}
    found: dict[str, list[bytes]] = {}
    for field, value in headers:
        name = wanted.get(field)
        if name is not None:
            found.setdefault(name, []).append(value)
    return b"\n".join(
        name.encode("latin-1") + b":" + normalize(name, found.get(name, ())) for name in names
    )
