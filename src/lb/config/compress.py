"""Validation of a route's `compress`: `true` (the defaults) or `{min_bytes, types, encodings}`."""

from __future__ import annotations

import re
from typing import Any, Literal

from lb.config.fields import (
    Invalid,
    Problems,
    Section,
    describe,
    item,
    section_or_flag,
    to_choice,
    to_list,
    to_size,
    to_str,
)
from lb.config.model import CompressConfig

ENCODINGS: tuple[Literal["zstd", "br", "gzip"], ...] = ("zstd", "br", "gzip")
_KEYS = tuple(CompressConfig.__dataclass_fields__)
# RFC 9110 §8.3.1: type "/" subtype, both tokens; "type/*" names a whole top-level type.
_TOKEN = r"[!#$%&'*+.^_`|~0-9a-z-]+"
_MEDIA_RANGE = re.compile(rf"{_TOKEN}/(\*|{_TOKEN})")


def to_media_range(value: Any) -> str:
    text = to_str(value).strip().lower()
    if not _MEDIA_RANGE.fullmatch(text) or text.startswith("*"):
        raise Invalid(
            f"expected a media type such as 'text/html' or 'text/*' (no parameters), "
            f"got {describe(value)}"
        )
    return text


def read_compress(value: Any, path: str, problems: Problems) -> CompressConfig | None:
    data = section_or_flag(value, path, problems)
    if data is None:
        return None
    s = Section(data, path, problems, _KEYS)
    default = CompressConfig()
    types = default.types
    if s.has("types"):
        types = to_list(s.raw("types"), s.key_path("types"), problems, to_media_range) or types
    encodings = default.encodings
    if s.has("encodings"):
        where = s.key_path("encodings")
        given = to_list(s.raw("encodings"), where, problems, to_choice(ENCODINGS, lower=True))
        if given is not None and not s.raw("encodings"):
            problems.add(where, "must name at least one of " + ", ".join(ENCODINGS))
        for index, name in enumerate(given or ()):
            if name in (given or ())[:index]:
                problems.add(item(where, index), f"{name!r} is listed twice")
        if given:
            encodings = tuple(dict.fromkeys(given))
    return CompressConfig(
        min_bytes=s.read("min_bytes", default.min_bytes, to_size(0)),
        types=types,
        encodings=encodings,
    )
